/**
 * The NixOS module evaluated by the real Nix through the stub module system of `nix/stub/`, for the
 * tests of the module, the flake and the deploy units.
 *
 * @module
 */

const ROOT = new URL("..", import.meta.url).pathname;

/**
 * `nix/stub/health.nix` with `settings` (a Nix expression for `services.nix-builder-health`):
 * the exit code and output of `nix-instantiate --eval --strict --json`. `bare` evaluates the module
 * file alone, without the flake's package.
 */
export async function evalStubHealth(
  settings: string,
  options: { bare?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("nix-instantiate", {
    args: [
      "--eval",
      "--strict",
      "--json",
      `${ROOT}nix/stub/health.nix`,
      ...(options.bare ? ["--arg", "bare", "true"] : []),
      "--arg",
      "settings",
      settings,
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}
