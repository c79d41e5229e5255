"""Read rosbag2 bags (mcap or sqlite3) message by message, and survive damaged ones.

Why our own sequential reader instead of an indexed one: a bag whose recorder
was killed, whose disk filled up or whose copy was cut short has no summary,
no footer and often no metadata.yaml. Indexed readers refuse such a file as a
whole, although almost everything in it is intact. Reading records in the
order they were written, we hand out every complete message and then stop
with a `BagCorruptError` that says where the damage starts and how many
messages came before it. Nothing that was fully written is lost: for mcap,
even the complete messages of a cut-off (uncompressed) chunk are recovered.

Works without ROS and without rclpy: messages come out as raw CDR bytes with
their topic, type and log time. Multi-file (split) bags, zstd file or message
compression and zstd/lz4 mcap chunks are supported.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Optional

from mtan_ros.errors import BagCorruptError, BagReadError  # noqa: F401 (re-exported)

MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}

# mcap opcodes (https://mcap.dev/spec)
_OP_HEADER, _OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
_OP_METADATA, _OP_DATA_END = 0x0C, 0x0F
_KNOWN_OPS = set(range(0x01, 0x12))
# A record longer than this is not plausible in a camera bag: the length field is damaged.
_MAX_RECORD = 1 << 34


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: Optional[int] = None  # None when the bag has no metadata to say so


@dataclass
class Bag:
    """A bag on disk: where its files are, what metadata.yaml says (if it exists)."""

    path: Path
    storage: str
    files: list[Path]
    metadata: dict[str, Any] = field(default_factory=dict)  # rosbag2_bagfile_information, {} if missing
    compression_mode: str = ""
    compression_format: str = ""

    @property
    def has_metadata(self) -> bool:
        return bool(self.metadata)

    @property
    def custom_data(self) -> dict[str, str]:
        return dict(self.metadata.get("custom_data") or {})

    @property
    def message_count(self) -> Optional[int]:
        value = self.metadata.get("message_count")
        return int(value) if value is not None else None

    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Topics with types (and counts when metadata.yaml exists; otherwise found by reading the bag)."""
        entries = self.metadata.get("topics_with_message_count") or []
        if entries:
            infos = [TopicInfo(e["topic_metadata"]["name"], e["topic_metadata"]["type"], int(e.get("message_count", 0)))
                     for e in entries]
            return {info.name: info for info in infos}
        found: dict[str, TopicInfo] = {}
        try:
            for msg in self.messages():
                info = found.setdefault(msg.topic, TopicInfo(msg.topic, msg.msgtype, 0))
                info.count = (info.count or 0) + 1
        except BagCorruptError:
            pass
        return found

    def messages(self, topics: Optional[Iterable[str]] = None) -> Iterator[BagMessage]:
        """Every message in recording order; raises BagCorruptError after the last good one if damaged."""
        wanted = set(topics) if topics is not None else None
        count, last = 0, None
        for path in self.files:
            reader = _iter_mcap(path, self) if self.storage == "mcap" else _iter_sqlite(path, self)
            try:
                for msg in reader:
                    if self.compression_mode == "message":
                        msg = BagMessage(msg.topic, msg.msgtype, msg.log_time_ns, _zstd_decompress(msg.data))
                    count, last = count + 1, msg.log_time_ns
                    if wanted is None or msg.topic in wanted:
                        yield msg
            except _Damaged as exc:
                where = f" (last good message at {last / 1e9:.3f} s)" if last is not None else ""
                raise BagCorruptError(
                    f"bag '{self.path}' is damaged: {exc} in '{path.name}'. Read {count} good message"
                    f"{'s' if count != 1 else ''} before it{where}; the rest of the file is unreadable. "
                    "Play or convert what was read, or re-record / re-create the bag (mtan-make-bag).",
                    count, last) from None


class _Damaged(Exception):
    """Internal: where and how the storage file stops making sense."""


# ------------------------------------------------------------------------------------ opening

def open_bag(path: "str | os.PathLike[str]") -> Bag:
    """Open a rosbag2 folder (or one of its .mcap/.db3 files); BagReadError if it is not a bag."""
    path = Path(path)
    if not path.exists():
        raise BagReadError(f"bag '{path}' not found: pass the folder that mtan-make-bag or `ros2 bag record` "
                           "wrote (it holds metadata.yaml and a .mcap or .db3 file)")
    folder = path if path.is_dir() else path.parent
    metadata = _read_metadata(folder / "metadata.yaml")
    if path.is_file():
        listed = [folder / f for f in metadata.get("relative_file_paths") or []]
        if path not in listed:
            metadata = {}  # a lone storage file: its folder's metadata describes other files
        files = [path] if not metadata else _existing(listed, folder)
    elif metadata:
        files = _existing([folder / f for f in metadata.get("relative_file_paths") or []], folder)
    else:
        files = sorted(p for p in folder.iterdir() if _storage_of(p) is not None)
        if not files:
            found = sorted(p.name for p in folder.iterdir())[:8]
            raise BagReadError(f"'{folder}' is not a rosbag2 folder: no metadata.yaml and no .mcap/.db3 file "
                               f"(found {found or 'nothing'})")
        files.sort(key=_split_index)
    storages = {_storage_of(p) or metadata.get("storage_identifier") for p in files}
    if len(storages) != 1 or None in storages:
        raise BagReadError(f"bag '{path}': cannot tell the storage format of {[p.name for p in files]}; "
                           "expected .mcap or .db3 files")
    storage = storages.pop()
    return Bag(path=folder if path.is_dir() else path, storage=storage, files=files, metadata=metadata,
               compression_mode=str(metadata.get("compression_mode") or ""),
               compression_format=str(metadata.get("compression_format") or ""))


def _read_metadata(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}  # a damaged metadata.yaml is like a missing one: the storage file is read directly
    info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
    return info if isinstance(info, dict) else {}


def _existing(files: list[Path], folder: Path) -> list[Path]:
    present = [p for p in files if p.is_file()]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise BagReadError(f"bag '{folder}': metadata.yaml lists {missing} but the file(s) are missing; "
                           "copy the whole bag folder")
    if not present:
        raise BagReadError(f"bag '{folder}': metadata.yaml lists no storage files")
    return present


def _storage_of(path: Path) -> Optional[str]:
    name = path.name
    for suffix in (".zstd",):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return STORAGE_SUFFIXES.get(Path(name).suffix)


def _split_index(path: Path) -> tuple[int, str]:
    stem = path.name.split(".")[0]
    tail = stem.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else 0, path.name)


def _zstd_decompress(data: bytes) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise BagReadError("this bag is zstd-compressed; install the 'zstandard' package to read it") from None
    try:
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except zstandard.ZstdError as exc:
        raise _Damaged(f"a compressed message does not decompress ({exc})") from None


def _open_stream(path: Path) -> BinaryIO:
    handle = open(path, "rb")
    if path.name.endswith(".zstd"):
        try:
            import zstandard
        except ImportError:
            handle.close()
            raise BagReadError(f"'{path.name}' is zstd-compressed; install the 'zstandard' package to read it") \
                from None
        return zstandard.ZstdDecompressor().stream_reader(handle, closefd=True)
    return handle


# ------------------------------------------------------------------------------------ mcap

class _Cursor:
    """Little-endian field reader over a buffer (a memoryview: no copies); _Damaged past the end."""

    def __init__(self, data: memoryview, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise _Damaged(f"{self.what} is cut short")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        try:
            return bytes(self.take(self.u32())).decode("utf-8")
        except UnicodeDecodeError:
            raise _Damaged(f"{self.what} has a string that is not UTF-8") from None


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        piece = stream.read(left)
        if not piece:
            break
        chunks.append(piece)
        left -= len(piece)
    return b"".join(chunks)


class _McapState:
    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, str]] = {}  # id -> (topic, msgtype)

    def record(self, op: int, body: memoryview, offset: int) -> Optional[BagMessage]:
        cur = _Cursor(body, f"record at byte {offset}")
        if op == _OP_SCHEMA:
            sid = cur.u16()
            self.schemas[sid] = cur.string()
        elif op == _OP_CHANNEL:
            cid, sid = cur.u16(), cur.u16()
            topic = cur.string()
            cur.string()  # message encoding (cdr)
            if sid and sid not in self.schemas:
                raise _Damaged(f"channel '{topic}' at byte {offset} refers to unknown schema {sid}")
            self.channels[cid] = (topic, self.schemas.get(sid, ""))
        elif op == _OP_MESSAGE:
            cid = cur.u16()
            cur.u32()  # sequence
            log_time = cur.u64()
            cur.u64()  # publish time
            if cid not in self.channels:
                raise _Damaged(f"message at byte {offset} is on unknown channel {cid}")
            topic, msgtype = self.channels[cid]
            return BagMessage(topic, msgtype, log_time, bytes(body[cur.pos:]))
        return None

    def chunk(self, body: memoryview, offset: int, complete: bool) -> Iterator[BagMessage]:
        """Messages of a chunk; of a cut-off uncompressed chunk, the complete ones, then _Damaged."""
        cur = _Cursor(body, f"chunk at byte {offset}")
        cur.u64(), cur.u64()  # message start / end time
        uncompressed_size = cur.u64()
        crc = cur.u32()
        compression = cur.string()
        size = cur.u64()
        data = body[cur.pos:cur.pos + size]
        if compression:
            if not complete or len(data) < size:
                raise _Damaged(f"the {compression} chunk at byte {offset} is cut short")
            data = memoryview(_decompress_chunk(bytes(data), compression, uncompressed_size, offset))
        elif complete and len(data) < size:
            raise _Damaged(f"chunk at byte {offset} is shorter than its header says")
        if complete and crc:
            import zlib

            if zlib.crc32(data) != crc:  # accepts any buffer
                raise _Damaged(f"chunk at byte {offset} fails its CRC check")
        pos = 0
        while pos < len(data):
            if pos + 9 > len(data):
                raise _Damaged(f"chunk at byte {offset} is cut short")
            op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
            if op not in _KNOWN_OPS and op < 0x80:
                raise _Damaged(f"chunk at byte {offset} holds an invalid record (opcode {op:#x})")
            end = pos + 9 + length
            if end > len(data):
                raise _Damaged(f"chunk at byte {offset} is cut short")
            msg = self.record(op, data[pos + 9:end], offset)
            if msg is not None:
                yield msg
            pos = end
        if not complete:
            raise _Damaged(f"the file ends inside the chunk at byte {offset}")


def _decompress_chunk(data: bytes, compression: str, size: int, offset: int) -> bytes:
    try:
        if compression == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
        if compression == "lz4":
            import lz4.frame

            return lz4.frame.decompress(data)
    except ImportError as exc:
        raise BagReadError(f"this mcap bag uses {compression} chunks; install the package for it ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the chunk is damaged
        raise _Damaged(f"the {compression} chunk at byte {offset} does not decompress ({exc})") from None
    raise BagReadError(f"mcap chunk compression {compression!r} is not supported (zstd, lz4 and none are)")


def _iter_mcap(path: Path, bag: Bag) -> Iterator[BagMessage]:
    with _open_stream(path) as stream:
        magic = _read_exact(stream, 8)
        if magic != MCAP_MAGIC:
            if not magic:
                raise _Damaged("the file is empty")
            raise BagReadError(f"'{path}' is not an mcap file (it starts with {magic[:8]!r})")
        state, offset = _McapState(), 8
        while True:
            head = _read_exact(stream, 9)
            if not head:
                raise _Damaged(f"the file ends at byte {offset} without a footer (recording not closed)")
            if len(head) < 9:
                raise _Damaged(f"the file ends inside a record header at byte {offset}")
            op, length = head[0], struct.unpack("<Q", head[1:])[0]
            if (op not in _KNOWN_OPS and op < 0x80) or length > _MAX_RECORD:
                raise _Damaged(f"invalid record at byte {offset} (opcode {op:#x}, length {length})")
            body = memoryview(_read_exact(stream, length))
            complete = len(body) == length
            if op == _OP_CHUNK:
                yield from state.chunk(body, offset, complete)
            elif not complete:
                raise _Damaged(f"the file ends inside a record at byte {offset}")
            elif op in (_OP_DATA_END, _OP_FOOTER):
                return
            else:
                msg = state.record(op, body, offset)
                if msg is not None:
                    yield msg
            offset += 9 + length


# ------------------------------------------------------------------------------------ sqlite3

_STRICT_VFS = "mtan_ros_strict"
_vfs_holder: list[Any] = []


def _strict_vfs() -> Any:
    """An sqlite VFS that refuses reads past the end of the file instead of zero-filling them.

    sqlite treats a short read as zeros. In a cut-off database that turns the last,
    partly written rows into rows full of zeros without any error; with this VFS the
    read fails, so such a row is reported as damaged instead of delivered wrong.
    """
    try:
        import apsw
    except ImportError:
        raise BagReadError("reading sqlite3 bags needs the 'apsw' package (installed with rosbags); "
                           "`pip install apsw`") from None
    if _vfs_holder:
        return apsw

    class StrictFile(apsw.VFSFile):
        def __init__(self, name: Any, flags: Any) -> None:
            super().__init__("", name, flags)

        def xRead(self, amount: int, offset: int) -> bytes:  # noqa: N802 - sqlite's method name
            data = super().xRead(amount, offset)
            if len(data) < amount:
                raise apsw.IOError(f"the file ends at byte {offset + len(data)}, inside a page")
            return data

    class StrictVFS(apsw.VFS):
        def __init__(self) -> None:
            super().__init__(_STRICT_VFS, "")

        def xOpen(self, name: Any, flags: Any) -> Any:  # noqa: N802 - sqlite's method name
            return StrictFile(name, flags)

    _vfs_holder.append(StrictVFS())  # registered for as long as it is referenced
    return apsw


def _sqlite_cut_short(path: Path) -> bool:
    """True unless the database header vouches for a file at least as long as the database."""
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100:
        return True
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages, counter, valid_for = (struct.unpack(">I", header[i:i + 4])[0] for i in (28, 24, 92))
    if pages == 0 or counter != valid_for:
        return True  # the size in the header is not trustworthy: read carefully
    return path.stat().st_size < pages * page_size


def _iter_sqlite(path: Path, bag: Bag) -> Iterator[BagMessage]:
    with open(path, "rb") as handle:
        magic = handle.read(16)
    if magic != SQLITE_MAGIC:
        if not magic:
            raise _Damaged("the file is empty")
        raise BagReadError(f"'{path}' is not an sqlite3 database (it starts with {magic[:16]!r})")
    apsw = _strict_vfs()
    # The strict (Python) VFS is slower; it is only needed when the file is shorter than its header says.
    vfs = _STRICT_VFS if _sqlite_cut_short(path) else None
    # immutable: no journal or lock files beside a bag that may be on read-only media; but a
    # recording left with a write-ahead log must be read through it, so then only read-only.
    wal = path.with_name(path.name + "-wal").exists()
    uri = f"file:{path.as_posix()}?mode=ro" + ("" if wal else "&immutable=1")
    try:
        conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI, vfs=vfs)
    except apsw.Error as exc:
        raise _Damaged(f"the database cannot be opened ({exc})") from None
    try:
        # A cut-off file is shorter than its header says; sqlite calls that malformed unless the
        # schema is "writable" (nothing is written: the connection is read-only).
        conn.execute("PRAGMA writable_schema=ON")
        try:
            topics = {int(tid): (str(name), str(msgtype))
                      for tid, name, msgtype in conn.execute("SELECT id, name, type FROM topics")}
        except apsw.Error as exc:
            raise _Damaged(f"the topics table is unreadable ({exc})") from None
        # Rows in insertion (rowid) order, which is the recording order. Each row is fetched on
        # its own, so damage stops the scan exactly there and every row before it is delivered.
        try:
            ids: Iterable[int] = [row[0] for row in conn.execute("SELECT id FROM messages ORDER BY id")]
        except apsw.Error:
            ids = _probe_ids()
        last_id = None
        for row_id in ids:
            try:
                row = conn.execute("SELECT topic_id, timestamp, data FROM messages WHERE id = ?",
                                   (row_id,)).fetchone()
            except apsw.Error as exc:
                after = f"after row {last_id}" if last_id is not None else "before its first row"
                raise _Damaged(f"the messages table is damaged {after} ({exc})") from None
            if row is None:
                return  # probing past the last row
            tid, stamp, data = row
            if tid not in topics:
                raise _Damaged(f"message row {row_id} refers to unknown topic id {tid}")
            topic, msgtype = topics[tid]
            last_id = row_id
            yield BagMessage(topic, msgtype, int(stamp), bytes(data))
    finally:
        conn.close()


def _probe_ids() -> Iterator[int]:
    """Row ids 1, 2, 3, ... (rosbag2 inserts rows without gaps) when the id index is unreadable."""
    row_id = 1
    while True:
        yield row_id
        row_id += 1


def read_all(path: "str | os.PathLike[str]") -> list[BagMessage]:
    """Every message of a bag (small bags, tests); raises BagCorruptError if it is damaged."""
    return list(open_bag(path).messages())


__all__ = ["Bag", "BagMessage", "BagReadError", "BagCorruptError", "TopicInfo", "open_bag", "read_all"]
