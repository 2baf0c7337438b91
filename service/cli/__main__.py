"""`python -m service.cli`: the `predq` command."""

from service.cli.main import main

main()
