#!/usr/bin/env python
import sys

from nudged.settings import configuration_error


def main() -> None:
    error = configuration_error()
    if error:
        sys.exit(error)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
