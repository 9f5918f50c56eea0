"""A run folder on a pyarrow filesystem (local path, or a URI such as s3:// or gs://).

Every write goes to a temporary name beginning with `_` (which Arrow's dataset readers ignore)
and is moved into place when complete, so nothing half-written is ever read. On a local folder the
reads that `xlp status` makes (bytes, sizes, listings) go through `os`, not pyarrow: importing pyarrow
(and numpy with it) was a quarter of that command's time.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import uuid
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from xlp.errors import XlpError
from xlp.hashing import HashingWriter, sha256_stream

if TYPE_CHECKING:
    import pyarrow as pa

# the storage's fault, not the program's: say what to do and keep everything finished
DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EACCES: "permission denied", errno.EROFS: "the filesystem is read-only"}


class Written(NamedTuple):
    bytes: int
    sha256: str


class ChecksumMismatch(Exception):
    """A stored file's bytes differ from the digest recorded when it was written."""


class Store:
    def __init__(self, location: str, fail_write: str | None = None):
        self.location = location
        self.fail_write = fail_write  # tests: writes to paths containing this fail with ENOSPC midway
        self.local = "://" not in location
        if self.local:
            self.root = str(Path(location).resolve())
        else:
            import pyarrow.fs as pafs

            self.fs, self.root = pafs.FileSystem.from_uri(location)
        self.root = self.root.rstrip("/")

    @cached_property
    def fs(self):
        """The pyarrow filesystem (a URI's is made in __init__; a local one when first needed)."""
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem()

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def local_path(self, rel: str) -> Path | None:
        """The path on this machine's disk, if the store is local."""
        return Path(self.path(rel)) if self.local else None

    def _atomic(self, rel: str, write) -> Written:
        final = self.path(rel)
        parent, name = final.rsplit("/", 1)
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/_tmp-{uuid.uuid4().hex[:12]}-{name}"
        try:
            with self.fs.open_output_stream(tmp) as out:
                sink = HashingWriter(out)
                write(sink)
                if self.fail_write and self.fail_write in rel:
                    raise OSError(errno.ENOSPC, "No space left on device (injected by XLP_FAIL_WRITE)")
            self.fs.move(tmp, final)
        except BaseException as e:
            try:
                self.fs.delete_file(tmp)
            except (OSError, FileNotFoundError):
                pass
            if isinstance(e, OSError) and e.errno in DISK_ERRORS:
                raise XlpError(f"cannot write {final}: {DISK_ERRORS[e.errno]} ({e.strerror}); nothing "
                               f"half-written was kept; free space or fix permissions and relaunch") from None
            raise
        return Written(self.size(rel), sink.sha.hexdigest())

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create `rel` holding `data` only if nothing is there, as one atomic step: True if this call
        created it, False if it existed; a reader never sees it empty or half written. A local disk writes a
        temporary file and hard-links it into place (O_EXCL where links are not supported); S3 a conditional
        put (If-None-Match: *, through boto3: pyarrow does not expose it). Other filesystems raise
        NotImplementedError."""
        local = self.local_path(rel)
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f"_tmp-{uuid.uuid4().hex[:12]}-{local.name}")
            tmp.write_bytes(data)
            try:
                os.link(tmp, local)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here
                try:
                    fd = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return True
            finally:
                tmp.unlink()
        if self.fs.type_name != "s3":
            raise NotImplementedError(f"no exclusive create on {self.fs.type_name}")
        from botocore.exceptions import ClientError

        bucket, key = self.path(rel).split("/", 1)
        try:
            _s3_client(self.location).put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as e:
            # 412: the key exists; 409: another conditional write to it is in progress (it wins)
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def write_bytes(self, rel: str, data: bytes) -> Written:
        return self._atomic(rel, lambda out: out.write(data))

    def write_table(self, rel: str, table: pa.Table, **parquet_options) -> Written:
        """Write Parquet atomically; returns the file's size and SHA-256 (hashed as it was written)."""
        import pyarrow.parquet as pq

        return self._atomic(rel, lambda out: pq.write_table(table, out, **parquet_options))

    def write_csv(self, rel: str, df) -> Written:
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        return self.write_bytes(rel, buf.getvalue().encode())

    def read_bytes(self, rel: str) -> bytes:
        if self.local:
            return Path(self.path(rel)).read_bytes()
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def sha256(self, rel: str) -> str:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return sha256_stream(f).hexdigest()

    def read_table(self, rel: str, columns: list[str] | None = None, sha256: str | None = None) -> pa.Table:
        """Read Parquet; with `sha256`, the file is read once into memory and checked before parsing. One file
        is read as one (pq.read_table would import and set up Arrow's dataset machinery, 0.2 s a process); a
        column not in it is an error, as it is there."""
        import pyarrow as pa

        if sha256 is None:
            with self.fs.open_input_file(self.path(rel)) as f:
                return self._parquet(rel, f, columns)
        data = self.read_bytes(rel)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ChecksumMismatch(rel)
        return self._parquet(rel, pa.BufferReader(data), columns)

    def _parquet(self, rel: str, source, columns: list[str] | None) -> pa.Table:
        import pyarrow.parquet as pq

        file = pq.ParquetFile(source)
        missing = [c for c in columns or () if c not in file.schema_arrow.names]
        if missing:
            raise XlpError(f"{self.path(rel)}: no column {', '.join(missing)}")
        return file.read(columns=columns)

    def size(self, rel: str) -> int | None:
        if self.local:
            path = Path(self.path(rel))
            return path.stat().st_size if path.is_file() else None
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path(rel))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self, rel: str) -> bool:
        if self.local:
            return os.path.exists(self.path(rel))
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def delete(self, rel: str) -> None:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.File:
            self.fs.delete_file(info.path)
        elif info.type == pafs.FileType.Directory:
            self.fs.delete_dir(info.path)

    def files(self, prefix: str, partial: bool = False) -> dict[str, int]:
        """Every complete file under `prefix` (relative path -> size), in one listing; with `partial`, instead the
        files still being written (or left so by a writer that died)."""
        if self.local:
            return self._local_files(prefix, partial)
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.path(prefix), recursive=True, allow_not_found=True)
        out = {}
        for info in self.fs.get_file_info(sel):
            if info.type == pafs.FileType.File and info.base_name.startswith("_tmp-") == partial:
                out[info.path[len(self.root) + 1:].replace(os.sep, "/")] = info.size
        return out

    def _local_files(self, prefix: str, partial: bool) -> dict[str, int]:
        out = {}
        for folder, _, names in os.walk(self.path(prefix)):
            rel = folder[len(self.root) + 1:].replace(os.sep, "/")
            for name in names:
                if name.startswith("_tmp-") == partial:
                    try:
                        out[f"{rel}/{name}" if rel else name] = os.stat(os.path.join(folder, name)).st_size
                    except FileNotFoundError:  # moved or deleted since the folder was listed
                        pass
        return out


def _s3_client(uri: str):
    """A boto3 S3 client for the same endpoint, region and credentials that pyarrow reads from `uri`
    (s3://[KEY:SECRET@]bucket/path?endpoint_override=host:port&scheme=http&region=...) or, where the
    URI does not say, from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ..., as pyarrow does)."""
    try:
        import boto3
    except ImportError:
        raise XlpError(f"{uri}: the run lock on s3:// makes a conditional put through boto3, which is not "
                       f"installed: pip install 'xlp[s3]' (or boto3)") from None
    parts = urlsplit(uri)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    kwargs = {}
    if "endpoint_override" in query:
        endpoint = query["endpoint_override"]
        kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"{query.get('scheme', 'https')}://{endpoint}"
    if "region" in query:
        kwargs["region_name"] = query["region"]
    if parts.username:
        kwargs.update(aws_access_key_id=unquote(parts.username), aws_secret_access_key=unquote(parts.password or ""))
    return boto3.client("s3", **kwargs)
