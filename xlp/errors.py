"""User-facing errors: the CLI prints them without a traceback and exits non-zero."""


class XlpError(Exception):
    """An error caused by the user's input (spec, data, checkpoints), with a message that says where."""


class ShardChecksumError(XlpError):
    """A stored output no longer matches the digest the ledger recorded when it was written."""

    def __init__(self, path: str):
        super().__init__(f"{path} does not match its checksum in the ledger (changed or corrupted since it was "
                         f"written); it is marked for redoing: relaunch")
        self.path = path

    def __reduce__(self):
        return (ShardChecksumError, (self.path,))
