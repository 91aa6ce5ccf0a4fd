"""serve's request bodies: multipart forms parsed as they stream in, in memory, within limits.

Starlette's own form parser spools large files to disk and learns their size only after
reading them; here each chunk is counted as it arrives. A file over the per-file limit
stops being kept (it fails alone); a body over the request limit ends the reading at once.
Nothing is written to disk, and an upload's name is only ever a string.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 1024  # a form field (format, quality, size, keep_size) is a short value
MAX_FIELDS = 16


class FormError(Exception):
    """A body that cannot be read as the form expected; carries the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Upload:
    """One uploaded file: its name as sent, declared type, bytes, or why it was not kept."""

    filename: str
    content_type: str
    data: bytes = b""
    error: str | None = None


@dataclass
class Form:
    """The files (field ``files``, in order) and the other fields of a request."""

    files: list[Upload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    too_large: bool = False


class _FormBuilder:
    """python-multipart callbacks that collect parts, counting bytes as they come."""

    def __init__(self, max_file_bytes: int, max_files: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.form = Form()
        self.part = _Part()
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict[str, object]:
        """The callbacks MultipartParser takes."""
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.part, self.headers = _Part(), {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self.part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        self.part.content_type = self.headers.get(b"content-type", b"").decode("latin-1")
        if self.part.filename is not None and len(self.form.files) >= self.max_files:
            raise FormError(413, f"more than {self.max_files} files in one request "
                                 "(--max-files); send the others in another request")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.size += end - start
        limit = self.max_file_bytes if part.filename is not None else MAX_FIELD_BYTES
        if part.size > limit:
            if part.filename is None:
                raise FormError(422, f"form field {part.name!r} is too long")
            part.too_large, part.chunks = True, []  # keep counting, stop keeping
            return
        part.chunks.append(data[start:end])

    def on_part_end(self) -> None:
        part = self.part
        if part.filename is None:
            if len(self.form.fields) >= MAX_FIELDS:
                raise FormError(422, "too many form fields")
            self.form.fields[part.name] = b"".join(part.chunks).decode("utf-8", "replace")
            return
        if part.name != "files":
            raise FormError(422, f"unexpected file field {part.name!r}; send images as 'files'")
        upload = Upload(part.filename, part.content_type, b"".join(part.chunks))
        if part.too_large:
            upload.error = (f"upload is over the --max-upload-mb limit of "
                            f"{self.max_file_bytes / 2**20:g} MB; not read")
        self.form.files.append(upload)


async def read_form(
    content_type: str,
    body: AsyncIterator[bytes],
    max_file_bytes: int,
    max_files: int,
    max_body_bytes: int,
) -> Form:
    """Parse a multipart/form-data body chunk by chunk; FormError for a bad or huge one."""
    media, options = parse_options_header(content_type)
    if media != b"multipart/form-data" or b"boundary" not in options:
        raise FormError(415, "send a multipart/form-data body with the images in 'files'")
    builder = _FormBuilder(max_file_bytes, max_files)
    try:  # python-multipart refuses a boundary over 256 bytes, among others
        parser = MultipartParser(options[b"boundary"], builder.callbacks())  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - its errors vary by version
        raise FormError(400, f"malformed multipart boundary: {exc}") from None
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > max_body_bytes:
            raise FormError(413, f"request body over {max_body_bytes / 2**20:g} MB; not read")
        try:
            parser.write(chunk)
        except FormError:
            raise
        except Exception as exc:  # noqa: BLE001 - python-multipart's errors vary by version
            raise FormError(422, f"malformed multipart body: {exc}") from None
    try:
        parser.finalize()
    except Exception as exc:  # noqa: BLE001
        raise FormError(422, f"malformed multipart body: {exc}") from None
    if not builder.form.files:
        raise FormError(422, "no images: send one or more files in the form field 'files'")
    return builder.form
