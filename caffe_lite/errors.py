"""The one exception type that user-facing code raises.

Every command turns a CaffeError into a single line on stderr and exit code 1, so the
message must stand on its own: name the file, the line when known, and the field.
"""


class CaffeError(Exception):
    """A user-facing error; str(err) is the whole one-line message."""

    def __init__(self, message, path=None, line=None, col=None):
        self.path = path
        self.line = line
        self.col = col
        self.bare_message = message
        super().__init__(self._format(message, path, line, col))

    @staticmethod
    def _format(message, path, line, col):
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
                if col is not None:
                    where += f":{col}"
            where += ": "
        return where + message.replace("\n", " ")
