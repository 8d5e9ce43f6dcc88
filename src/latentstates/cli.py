"""The package's command lines in one place: `latentstates <command> [options]` (also
`python -m latentstates <command>`); `latentstates <command> --help` for a command's options.

Commands:
    forecast          where a run, still training or finished, is headed under a task's fitted HMM:
                      its current state, a detour, when it converges (latentstates.forecast)
    llc-calibration   sweep the local learning coefficient's SGLD step size and temperature on one
                      run of a task and suggest the pair (latentstates.measure.llc_calibration)
    config-reference  the configuration reference, docs/configuration.md, from the config schema
                      (latentstates.config_reference)
"""

from __future__ import annotations

import importlib
import sys

# Command → the module whose `main(argv)` runs it.
COMMANDS = {
    "forecast": "latentstates.forecast.__main__",
    "llc-calibration": "latentstates.measure.llc_calibration",
    "config-reference": "latentstates.config_reference",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"latentstates: no command {command!r}; the commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command]).main(rest) or 0


if __name__ == "__main__":
    raise SystemExit(main())
