"""``python -m pacore_agents`` is the ``pacore`` command."""

from pacore_agents.cli import main

if __name__ == "__main__":
    main()
