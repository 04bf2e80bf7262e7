"""`python -m seqdni.pipeline`: see `seqdni.cli.pipeline`."""

from seqdni.cli.pipeline import main

if __name__ == "__main__":
    main()
