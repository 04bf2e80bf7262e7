"""The command lines: `python -m seqdni.train` (LightningCLI) and `python -m seqdni.sample`."""
