"""`python -m seqdni.train`: see `seqdni.cli.train`."""

from seqdni.cli.train import main

if __name__ == "__main__":
    main()
