"""``python -m physgsa``: the command line (the same as the ``physgsa`` script)."""

from .cli import main

if __name__ == "__main__":
    main()
