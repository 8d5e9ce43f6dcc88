"""`python -m latentstates <command>`: the command lines of `latentstates.cli`."""

from latentstates.cli import main

raise SystemExit(main())
