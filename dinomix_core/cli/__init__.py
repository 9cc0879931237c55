"""Command-line front end (`dinomix ...`)."""


def main(argv=None):
    from dinomix_core.cli.main import main as _main

    return _main(argv)
