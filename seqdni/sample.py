"""`python -m seqdni.sample`: see `seqdni.cli.sample`."""

from seqdni.cli.sample import main

if __name__ == "__main__":
    main()
