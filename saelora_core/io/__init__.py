"""The floor of the package: paths, atomic writes and the config base every config shares."""
