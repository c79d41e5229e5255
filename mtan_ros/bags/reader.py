"""Read rosbag2 bags (mcap or sqlite3) message by message, and survive damaged ones.

Why a sequential reader instead of an indexed one: a bag whose recorder was
killed, whose disk filled up or whose copy was cut short or overwritten has a
damaged or missing index, and indexed readers refuse such a file as a whole
although almost everything in it is intact. Reading the records in the order
they were written, `Bag.messages()` hands out every intact message, skips what
is damaged, notes each damaged place in `Bag.damage` (which file and byte or
row, what is wrong, how many messages were lost there, on which topics and in
which log-time range, as far as the file can tell) and, after the last
message, raises `BagCorruptError` if there was any.

mcap (records, chunk decompression and CRCs from the `mcap` library): every
chunk's CRC is verified, so a chunk with altered bytes is never delivered; a
damaged chunk or record is skipped to the next intact chunk (found by its
header, then verified). The message index records after a lost chunk, or the
file's summary, say what it held. What the library cannot give is salvaged
here: the complete messages of a cut-off last chunk (uncompressed only; they
cannot be CRC-checked, so each must at least parse, see
`messages.cdr_problem`) and every message of a recording without a footer.
Chunks written with CRC 0 (by other tools) cannot be verified; damage in them
is seen only where a record or a message does not parse.

sqlite3: rows carry no checksum. The reader detects rows that sqlite cannot
read (a cut-off or garbled page), payloads that do not parse as their message
type or whose sizes disagree with their own header (`messages.cdr_problem`),
and fewer rows than metadata.yaml lists; bytes overwritten inside an image's
pixels go unnoticed, and so does a lost row when there is no metadata.yaml.

Works without ROS and without rclpy: messages come out as raw CDR bytes with
their topic, type and log time. Multi-file (split) bags, zstd file or message
compression and zstd/lz4 mcap chunks are supported.
"""
from __future__ import annotations

import contextlib
import io
import mmap
import os
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Optional

import yaml

from mtan_ros.bags.messages import cdr_problem
from mtan_ros.errors import BagCorruptError, BagReadError  # noqa: F401 (re-exported)

MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}


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
class Damage:
    """One damaged place of a bag and what was lost there.

    `where` names the place ("chunk at byte 4133", "bytes 4133-9000", "row 17");
    `offset` and `length` give it in bytes for mcap files. `messages` counts the
    messages lost there (None: unknown, e.g. when a cut-off file says nothing of
    what followed); `topics` and `first_ns` / `last_ns` (log times) describe them
    when the file tells.
    """

    file: str
    where: str
    problem: str
    offset: Optional[int] = None
    length: Optional[int] = None
    messages: Optional[int] = None
    topics: list[str] = field(default_factory=list)
    first_ns: Optional[int] = None
    last_ns: Optional[int] = None

    def lose(self, topic: Optional[str], log_times: Iterable[int] = (), count: Optional[int] = None) -> None:
        """Count `count` messages (default: one per log time) of `topic` as lost here."""
        times = list(log_times)
        self.messages = (self.messages or 0) + (len(times) if count is None else count)
        if topic and topic not in self.topics:
            self.topics.append(topic)
        if times:
            self.first_ns = min(times) if self.first_ns is None else min(self.first_ns, *times)
            self.last_ns = max(times) if self.last_ns is None else max(self.last_ns, *times)

    def __str__(self) -> str:
        if self.messages is None:
            lost = "an unknown number of messages lost"
        else:
            lost = f"{self.messages} message{'' if self.messages == 1 else 's'} lost"
        if self.messages != 0 and self.topics:
            lost += f" on {', '.join(sorted(self.topics))}"
        if self.messages != 0 and self.first_ns is not None:
            if self.last_ns is None:
                lost += f", from log time {self.first_ns / 1e9:.3f} s on"
            elif self.last_ns != self.first_ns:
                lost += f", log time {self.first_ns / 1e9:.3f}-{self.last_ns / 1e9:.3f} s"
            else:
                lost += f", log time {self.first_ns / 1e9:.3f} s"
        return f"{self.file}: {self.where} {self.problem} ({lost})"


@dataclass
class Bag:
    """A bag on disk: where its files are, what metadata.yaml says (if it exists), what is damaged."""

    path: Path
    storage: str
    files: list[Path]
    metadata: dict[str, Any] = field(default_factory=dict)  # rosbag2_bagfile_information, {} if missing
    compression_mode: str = ""
    compression_format: str = ""
    damage: list[Damage] = field(default_factory=list)  # filled by each full pass of messages()

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
        """Every intact message in recording order; then BagCorruptError if anything was damaged.

        The damaged places are in `self.damage` afterwards (see the module doc).
        """
        wanted = set(topics) if topics is not None else None
        self.damage = []
        count, last = 0, None
        kind = _McapFile if self.storage == "mcap" else _SqliteFile
        for path in self.files:
            with _uncompressed(path, self.damage) as plain:
                source = kind(plain, path.name, self.damage, self.compression_mode == "message",
                              self._listed_count(path))
                for msg in source.messages():
                    count, last = count + 1, msg.log_time_ns
                    if wanted is None or msg.topic in wanted:
                        yield msg
        expected = self.message_count
        known = [d.messages for d in self.damage]
        if expected is not None and None not in known and count + sum(known) < expected:
            missing = expected - count - sum(known)
            beyond = ", beyond the damaged places above" if self.damage else ""
            self.damage.append(Damage("metadata.yaml", "lists", f"{expected} messages; {missing} of them are "
                                      f"not in the storage{beyond}", messages=missing))
        if self.damage:
            raise self._corrupt_error(count, last, expected)

    def _listed_count(self, path: Path) -> Optional[int]:
        """How many messages metadata.yaml says this storage file holds (None if it does not say)."""
        for entry in self.metadata.get("files") or []:
            if isinstance(entry, dict) and entry.get("path") == path.name and entry.get("message_count") is not None:
                return int(entry["message_count"])
        return None

    def _corrupt_error(self, count: int, last: Optional[int], expected: Optional[int]) -> BagCorruptError:
        more = len(self.damage) - 1
        others = f" and {more} more damaged place{'s' if more > 1 else ''}" if more else ""
        listed = f" of the {expected} in metadata.yaml" if expected is not None else ""
        where = f" (the last at log time {last / 1e9:.3f} s)" if last is not None else ""
        return BagCorruptError(
            f"bag '{self.path}' is damaged: {self.damage[0]}{others}. Read {count} good message"
            f"{'s' if count != 1 else ''}{listed}{where}, skipping only what is damaged. Play or convert what "
            "was read, or re-record / re-create the bag (mtan-make-bag).", count, last)


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


def _zstandard() -> Any:
    try:
        import zstandard  # optional: comes with mcap (pip install .[bags])
    except ImportError:
        raise BagReadError("this bag is zstd-compressed; install the 'zstandard' package to read it") from None
    return zstandard


def _unzstd(pieces: Iterable[bytes], out: Optional[BinaryIO] = None) -> tuple[bytes, str]:
    """Decompress zstd frames (into `out`, or returned); also says why they stop short ("" if they do not)."""
    zstandard = _zstandard()
    maker = zstandard.ZstdDecompressor()
    state, fed = maker.decompressobj(), False
    kept: list[bytes] = []
    try:
        for data in pieces:
            while data:
                if state.eof:
                    state = maker.decompressobj()
                piece, fed = state.decompress(data), True
                if out is None:
                    kept.append(piece)
                else:
                    out.write(piece)
                data = state.unused_data if state.eof else b""
    except zstandard.ZstdError as exc:
        return b"".join(kept), f"does not decompress ({exc})"
    return b"".join(kept), "" if state.eof or not fed else "is cut short"


@contextlib.contextmanager
def _uncompressed(path: Path, damage: list[Damage]) -> Iterator[Path]:
    """The storage file itself, or for a .zstd file a temporary copy of what decompresses of it."""
    if not path.name.endswith(".zstd"):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mtan_bag_") as tmp:
        plain = Path(tmp) / path.name[: -len(".zstd")]
        with open(path, "rb") as source, open(plain, "wb") as out:
            _, why = _unzstd(iter(lambda: source.read(1 << 20), b""), out)
            if why:
                damage.append(Damage(path.name, "its zstd compression", f"{why} after {out.tell()} bytes; what "
                                     "came before is read"))
        yield plain


def _decoded(msg: BagMessage, compressed: bool, check: bool) -> tuple[Optional[BagMessage], str]:
    """A stored message as it is played, or (None, why not).

    Its payload is decompressed in compression mode "message"; when nothing on disk
    verified it (sqlite3, an mcap chunk without CRC or cut off), it must parse
    (messages.cdr_problem).
    """
    if compressed:
        data, why = _unzstd([msg.data])
        if why:
            return None, f"holds a compressed message that {why}"
        msg = BagMessage(msg.topic, msg.msgtype, msg.log_time_ns, data)
    if check:
        problem = cdr_problem(msg.data, msg.msgtype)
        if problem is not None:
            return None, f"holds a damaged {msg.msgtype}: {problem}"
    return msg, ""


# ------------------------------------------------------------------------------------ mcap

_FOOTER_BYTES = 1 + 8 + 20  # opcode, length, summary start, summary offset start, summary crc
# A chunk record's start: opcode 0x06, a length below 2**40, 28 bytes of times / size / crc,
# then its compression ("", "lz4" or "zstd").
_CHUNK_START = re.compile(rb"\x06[\s\S]{5}\x00\x00\x00[\s\S]{28}"
                          rb"(?:\x00\x00\x00\x00|\x03\x00\x00\x00lz4|\x04\x00\x00\x00zstd)")


class _McapFile:
    """One mcap file read in order with the `mcap` library; damage is noted and skipped."""

    def __init__(self, path: Path, name: str, damage: list[Damage], compressed: bool = False,
                 listed: Optional[int] = None) -> None:  # noqa: ARG002 - the sqlite reader's signature
        self.path, self.name, self.damage, self.compressed = path, name, damage, compressed
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, str]] = {}  # id -> (topic, msgtype)
        self.mm: Any = None
        self.size = 0
        self._summary: Any = None
        self._summary_read = False

    def _note(self, where: str, problem: str, offset: Optional[int] = None, length: Optional[int] = None,
              messages: Optional[int] = None) -> Damage:
        found = Damage(self.name, where, problem, offset, length, messages)
        self.damage.append(found)
        return found

    def messages(self) -> Iterator[BagMessage]:
        self.size = self.path.stat().st_size
        if self.size < len(MCAP_MAGIC):
            with open(self.path, "rb") as handle:
                start = handle.read()
            if not MCAP_MAGIC.startswith(start):
                raise BagReadError(f"'{self.path}' is not an mcap file (it starts with {start!r})")
            self._note("the file", "is empty" if not start else f"ends after {len(start)} bytes", 0, self.size)
            return
        with open(self.path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm[:8] != MCAP_MAGIC:
                raise BagReadError(f"'{self.path}' is not an mcap file (it starts with {mm[:8]!r})")
            self.mm = mm
            try:
                yield from self._records()
            finally:
                self.mm = None

    def _head(self, offset: int) -> Optional[tuple[int, int]]:
        if offset + 9 > self.size:
            return None
        return struct.unpack_from("<BQ", self.mm, offset)

    def _parse(self, offset: int, end: int) -> tuple[Any, str]:
        """(the record at `offset` read by the library from exactly its bytes, or None; why not)."""
        from mcap.exceptions import McapError  # optional: pip install .[bags]
        from mcap.stream_reader import StreamReader  # optional: pip install .[bags]

        stream = io.BytesIO(self.mm[offset:end])  # bounded: a garbled inner length cannot read further
        try:
            record = next(StreamReader(stream, skip_magic=True, emit_chunks=True, record_size_limit=None).records)
        except (McapError, struct.error, ValueError, StopIteration) as exc:
            return None, str(exc) or type(exc).__name__
        if stream.tell() != end - offset:
            return None, "its fields disagree with its length"
        return record, ""

    def _record_at(self, offset: int, opcode: int) -> Any:
        """The record at `offset` if its header says `opcode`, it fits in the file and it reads."""
        head = self._head(offset)
        if head is None or head[0] != opcode or offset + 9 + head[1] > self.size:
            return None
        return self._parse(offset, offset + 9 + head[1])[0]

    def _records(self) -> Iterator[BagMessage]:
        """Top-level records in file order; a damaged one is noted and reading goes on at the next chunk."""
        from mcap.opcode import Opcode  # optional: pip install .[bags]
        from mcap.records import Chunk, DataEnd, Footer, MessageIndex  # optional: pip install .[bags]

        offset: Optional[int] = len(MCAP_MAGIC)
        lost: Optional[tuple[Damage, int]] = None  # a damaged chunk whose message index records follow
        while offset is not None:
            head = self._head(offset)
            if head is None:
                if offset >= self.size:
                    self._note(f"the file ends at byte {offset}", "without a footer (the recording was not closed)",
                               offset, 0)
                else:
                    self._note(f"the file ends at byte {self.size}", "inside a record header", offset,
                               self.size - offset)
                return
            op, length = head
            name, end = _opcode_name(op), offset + 9 + length
            if name is None and op >= 0x80 and end <= self.size:
                offset = end  # a user-defined record
                continue
            if name is None:
                offset = self._resync(offset, f"invalid record (opcode {op:#x}, length {length})")
                continue
            if end > self.size:
                if op == Opcode.CHUNK and self._chunk_header(offset) is not None:
                    yield from self._cut_off_chunk(offset)
                    return
                offset = self._resync(offset, f"a record header (opcode {op:#x}, length {length}) that runs past "
                                              "the end of the file")
                continue
            record, why = self._parse(offset, end)
            if record is None:
                offset = self._resync(offset, f"unreadable {name} record ({why})")
                continue
            if isinstance(record, MessageIndex):
                if lost is not None:
                    damage, first_byte = lost
                    topic = self._channel(record.channel_id)
                    damage.lose(topic[0] if topic else None, [t for t, at in record.records if at >= first_byte])
            else:
                lost = None
            if isinstance(record, Chunk):
                lost = yield from self._chunk(record, offset, end - offset)
            elif isinstance(record, DataEnd):
                self._check_end(offset, end, record.data_section_crc)
                return
            elif isinstance(record, Footer):
                return
            else:
                msg = self._record(record, f"message at byte {offset}", check=True)
                if msg is not None:
                    yield msg
            offset = end

    # -------------------------------------------------------------------- chunks
    def _chunk(self, chunk: Any, offset: int, length: int) -> Iterator[BagMessage]:
        """The messages of a verified chunk; else the Damage (and first lost byte) its message index fills."""
        from mcap.exceptions import UnsupportedCompressionError  # optional: pip install .[bags]
        from mcap.stream_reader import CRCValidationError, get_chunk_data_stream  # optional: pip install .[bags]

        where = f"chunk at byte {offset}"
        try:
            stream, size = get_chunk_data_stream(chunk, validate_crc=True)
        except UnsupportedCompressionError as exc:
            raise BagReadError(f"'{self.path}' has {chunk.compression} chunks; install the package for them ({exc})") \
                from None
        except CRCValidationError:
            problem = "fails its CRC check"
        except Exception as exc:  # noqa: BLE001 - any decoder failure means the chunk is damaged
            problem = f"does not decompress ({exc})"
        else:
            records, bad = _chunk_records(stream, size)
            last = None
            for record in records:
                msg = self._record(record, where, check=not chunk.uncompressed_crc)
                if msg is not None:
                    last = msg.log_time_ns
                    yield msg
            if bad is None:
                return None
            at, why = bad
            unverified = "" if chunk.uncompressed_crc else " (the chunk has no CRC)"
            damage = self._note(where, f"has a damaged record at byte {at} of its data ({why}){unverified}; "
                                       "the rest of the chunk is skipped", offset, length)
            if last is not None:
                damage.first_ns = last
            return damage, at
        damage = self._note(where, problem, offset, length)
        damage.first_ns, damage.last_ns = chunk.message_start_time, chunk.message_end_time
        return damage, 0

    def _record(self, record: Any, where: str, check: bool) -> Optional[BagMessage]:
        """Schemas and channels are kept; a message is returned (None, and noted, if it is not usable)."""
        from mcap.records import Channel, Message, Schema  # optional: pip install .[bags]

        if isinstance(record, Schema):
            self.schemas[record.id] = record.name
        elif isinstance(record, Channel):
            self.channels[record.id] = (record.topic, self.schemas.get(record.schema_id, ""))
        elif isinstance(record, Message):
            return self._message(record, where, check)
        return None

    def _channel(self, channel_id: int) -> Optional[tuple[str, str]]:
        """Topic and type of a channel, from the records read so far or else from the summary."""
        if channel_id not in self.channels:
            summary = self._read_summary()
            channel = summary.channels.get(channel_id) if summary is not None else None
            if channel is not None:
                schema = summary.schemas.get(channel.schema_id)
                self.channels[channel_id] = (channel.topic, schema.name if schema is not None else "")
        return self.channels.get(channel_id)

    def _message(self, record: Any, where: str, check: bool) -> Optional[BagMessage]:
        channel = self._channel(record.channel_id)
        if channel is None:
            damage = self._note(where, f"holds a message on channel {record.channel_id}, which no intact record "
                                       "describes")
            damage.lose(None, [record.log_time])
            return None
        msg, why = _decoded(BagMessage(channel[0], channel[1], record.log_time, record.data), self.compressed, check)
        if msg is None:
            self._note(where, why).lose(channel[0], [record.log_time])
        return msg

    def _chunk_header(self, offset: int) -> Optional[tuple[int, int]]:
        """(message start, end time) if a chunk record's header at `offset` agrees with its own length."""
        if offset + 9 + 40 > self.size:
            return None
        _, length, start, stop, _, _, text = struct.unpack_from("<BQQQQII", self.mm, offset)
        if text not in (0, 3, 4) or offset + 9 + 40 + text > self.size or start > stop:
            return None
        compression = bytes(self.mm[offset + 9 + 32:offset + 9 + 32 + text])
        (data_length,) = struct.unpack_from("<Q", self.mm, offset + 9 + 32 + text)
        if compression not in (b"", b"lz4", b"zstd") or length != 32 + text + 8 + data_length:
            return None
        return start, stop

    def _cut_off_chunk(self, offset: int) -> Iterator[BagMessage]:
        """The complete messages of the chunk the file ends in (they cannot be CRC-checked: each must parse)."""
        from mcap.data_stream import ReadDataStream  # optional: pip install .[bags]
        from mcap.exceptions import McapError  # optional: pip install .[bags]
        from mcap.records import Chunk  # optional: pip install .[bags]

        try:
            chunk = Chunk.read(ReadDataStream(io.BytesIO(self.mm[offset + 9:])))
        except (McapError, ValueError):
            chunk = None
        where = f"chunk at byte {offset}"
        cut = f"is cut off by the end of the file at byte {self.size}"
        if chunk is None or chunk.compression:
            why = "none of its data is there" if chunk is None \
                else f"its {chunk.compression} data cannot be decompressed"
            damage = self._note(where, f"{cut}; {why}", offset, self.size - offset)
            damage.first_ns = self._chunk_header(offset)[0]
            return
        records, _ = _chunk_records(ReadDataStream(io.BytesIO(chunk.data)), len(chunk.data))
        delivered, last = 0, None
        damage = self._note(where, cut, offset, self.size - offset)  # before the notes of unusable messages
        for record in records:
            msg = self._record(record, where, check=True)
            if msg is not None:
                delivered, last = delivered + 1, msg.log_time_ns
                yield msg
        damage.problem += f"; its {delivered} complete message{'' if delivered == 1 else 's'} that parse went " \
                          "out without a CRC check"
        damage.first_ns = last if last is not None else chunk.message_start_time

    # -------------------------------------------------------------------- damage and the end
    def _resync(self, offset: int, problem: str) -> Optional[int]:
        """Note the damage at `offset`; return the next chunk after it whose header agrees with itself."""
        target = self._next_chunk(offset + 1)
        stop = self.size if target is None else target
        after = "the rest of the file is skipped" if target is None else f"skipped to byte {target}"
        damage = self._note(f"bytes {offset}-{stop}", f"are damaged: {problem}; {after}", offset, stop - offset)
        self._index_loss(damage, offset, stop)
        return target

    def _next_chunk(self, pos: int) -> Optional[int]:
        while True:
            found = _CHUNK_START.search(self.mm, pos)
            if found is None or self._chunk_header(found.start()) is not None:
                return None if found is None else found.start()
            pos = found.start() + 1

    def _footer(self) -> Any:
        at = self.size - len(MCAP_MAGIC) - _FOOTER_BYTES
        if at < len(MCAP_MAGIC) or self.mm[-8:] != MCAP_MAGIC:
            return None
        footer = self._record_at(at, 0x02)
        return footer if footer is not None and footer.summary_start <= at else None

    def _summary_crc_ok(self, footer: Any) -> bool:
        at = self.size - len(MCAP_MAGIC) - _FOOTER_BYTES
        start = footer.summary_start or at
        return not footer.summary_crc or zlib.crc32(memoryview(self.mm)[start:at + 1 + 8 + 16]) == footer.summary_crc

    def _read_summary(self) -> Any:
        """The file's summary (channels, chunk indexes) if its footer is intact and its CRC matches."""
        if not self._summary_read:
            self._summary_read = True
            footer = self._footer()
            if footer is not None and footer.summary_start and self._summary_crc_ok(footer):
                from mcap.exceptions import McapError  # optional: pip install .[bags]
                from mcap.reader import SeekingReader  # optional: pip install .[bags]

                try:
                    with open(self.path, "rb") as handle:
                        self._summary = SeekingReader(handle).get_summary()
                except (McapError, struct.error, ValueError):
                    self._summary = None
        return self._summary

    def _index_loss(self, damage: Damage, start: int, stop: int) -> None:
        """Fill in what the chunks starting between `start` and `stop` held, from the summary's indexes."""
        summary = self._read_summary()
        if summary is None:
            return
        damage.messages = 0
        for index in summary.chunk_indexes:
            if not start <= index.chunk_start_offset < stop:
                continue
            for channel_id, at in index.message_index_offsets.items():
                record = self._record_at(at, 0x07)
                if record is None:
                    damage.messages = None
                    return
                topic = self._channel(channel_id)
                damage.lose(topic[0] if topic else None, [t for t, _ in record.records])

    def _check_end(self, offset: int, end: int, data_crc: int) -> None:
        """After DataEnd: the data section's CRC (when written) and an intact summary and footer."""
        if data_crc and zlib.crc32(memoryview(self.mm)[:offset]) != data_crc:
            self._note("the data section", "fails its CRC check (every chunk passed its own)", 0, offset)
        footer = self._footer()
        index = "; every message was read, but indexed readers (ros2 bag) may refuse the file"
        if footer is None:
            self._note(f"the summary after byte {end}", f"is cut off or its footer is damaged{index}", end,
                       self.size - end, messages=0)
        elif not self._summary_crc_ok(footer):
            self._note(f"the summary at byte {footer.summary_start}", f"fails its CRC check{index}",
                       footer.summary_start, self.size - footer.summary_start, messages=0)


def _opcode_name(op: int) -> Optional[str]:
    from mcap.opcode import Opcode  # optional: pip install .[bags]

    try:
        return Opcode(op).name.lower()
    except ValueError:
        return None


def _chunk_records(stream: Any, size: int) -> tuple[list[Any], Optional[tuple[int, str]]]:
    """The records of a chunk's data (read by the library) up to the first that is damaged or cut off.

    Returns them and, if the data does not end cleanly, (byte offset, what is wrong).
    """
    from mcap.exceptions import McapError  # optional: pip install .[bags]
    from mcap.opcode import Opcode  # optional: pip install .[bags]
    from mcap.records import Channel, Message, Schema  # optional: pip install .[bags]

    readers = {Opcode.SCHEMA: Schema.read, Opcode.CHANNEL: Channel.read}
    records: list[Any] = []
    while stream.count < size:
        start = stream.count
        if size - start < 9:
            return records, (start, "cut off inside a record header")
        op, length = stream.read1(), stream.read8()
        if start + 9 + length > size:
            return records, (start, f"a record of {length} bytes runs past the end")
        try:
            if op == Opcode.MESSAGE and length >= 22:
                records.append(Message.read(stream, length))
            elif op in readers:
                records.append(readers[op](stream))
            elif op >= 0x80:
                stream.read(length)
            else:
                return records, (start, f"invalid record (opcode {op:#x})")
        except (McapError, struct.error, ValueError) as exc:
            return records, (start, f"unreadable record ({exc})")
        if stream.count != start + 9 + length:
            return records[:-1], (start, "a record whose fields disagree with its length")
    return records, None


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
        import apsw  # optional: comes with rosbags (pip install .[bags])
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


class _SqliteFile:
    """One sqlite3 storage file, row by row in recording order; unreadable or unparsable rows are noted."""

    def __init__(self, path: Path, name: str, damage: list[Damage], compressed: bool = False,
                 listed: Optional[int] = None) -> None:
        self.path, self.name, self.damage, self.compressed = path, name, damage, compressed
        self.listed = listed  # rows metadata.yaml counts in this file: how far to probe without an id index

    def _note(self, where: str, problem: str, messages: Optional[int] = None) -> Damage:
        found = Damage(self.name, where, problem, messages=messages)
        self.damage.append(found)
        return found

    def messages(self) -> Iterator[BagMessage]:
        with open(self.path, "rb") as handle:
            magic = handle.read(16)
        if magic != SQLITE_MAGIC:
            if SQLITE_MAGIC.startswith(magic):
                self._note("the file", "is empty" if not magic else f"ends after {len(magic)} bytes")
                return
            raise BagReadError(f"'{self.path}' is not an sqlite3 database (it starts with {magic[:16]!r})")
        apsw = _strict_vfs()
        # The strict (Python) VFS is slower; it is only needed when the file is shorter than its header says.
        vfs = _STRICT_VFS if _sqlite_cut_short(self.path) else None
        # immutable: no journal or lock files beside a bag that may be on read-only media; but a
        # recording left with a write-ahead log must be read through it, so then only read-only.
        wal = self.path.with_name(self.path.name + "-wal").exists()
        uri = f"file:{self.path.as_posix()}?mode=ro" + ("" if wal else "&immutable=1")
        try:
            conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI, vfs=vfs)
        except apsw.Error as exc:
            self._note("the database", f"cannot be opened ({exc})")
            return
        try:
            yield from self._rows(conn, apsw)
        finally:
            conn.close()

    def _rows(self, conn: Any, apsw: Any) -> Iterator[BagMessage]:
        # A cut-off file is shorter than its header says; sqlite calls that malformed unless the
        # schema is "writable" (nothing is written: the connection is read-only).
        conn.execute("PRAGMA writable_schema=ON")
        try:
            topics = {int(tid): (str(name), str(msgtype))
                      for tid, name, msgtype in conn.execute("SELECT id, name, type FROM topics")}
        except apsw.Error as exc:
            self._note("the topics table", f"is unreadable ({exc})")
            return
        # Rows in insertion (rowid) order, which is the recording order. Each row is fetched on its
        # own, so a damaged row is skipped and every other row is still delivered.
        try:
            ids: Iterable[int] = [row[0] for row in conn.execute("SELECT id FROM messages ORDER BY id")]
            probing = False
        except apsw.Error:
            ids, probing = (range(1, self.listed + 1) if self.listed else _probe_ids()), not self.listed
        unreadable: Optional[Damage] = None  # a run of consecutive rows sqlite cannot read
        first_bad, keys_known = 0, True
        for row_id in ids:
            try:
                row = conn.execute("SELECT topic_id, timestamp, data FROM messages WHERE id = ?",
                                   (row_id,)).fetchone()
            except apsw.Error as exc:
                if unreadable is None:
                    first_bad, keys_known = row_id, True
                    unreadable = self._note(f"row {row_id}", f"cannot be read ({exc})", messages=0)
                else:
                    unreadable.where = f"rows {first_bad}-{row_id}"
                topic, stamp = self._row_key(conn, apsw, row_id, topics) if keys_known else (None, None)
                if topic is None or stamp is None:  # topics and times of the run are only told when all known
                    keys_known = False
                    unreadable.topics, unreadable.first_ns, unreadable.last_ns = [], None, None
                unreadable.lose(topic if keys_known else None, [stamp] if keys_known else [], count=1)
                if probing:
                    return  # without the id index or metadata.yaml the end of the table is unknown
                continue
            unreadable = None
            if row is None:
                if probing:
                    return  # probing past the last row
                continue  # counted against metadata.yaml at the end
            tid, stamp, data = row
            if tid not in topics:
                lost = self._note(f"row {row_id}", f"refers to unknown topic id {tid}", messages=0)
                lost.lose(None, [int(stamp)])
                continue
            topic, msgtype = topics[tid]
            msg, why = _decoded(BagMessage(topic, msgtype, int(stamp), bytes(data)), self.compressed, check=True)
            if msg is None:
                self._note(f"row {row_id}", why, messages=0).lose(topic, [int(stamp)])
                continue
            yield msg

    @staticmethod
    def _row_key(conn: Any, apsw: Any, row_id: int, topics: dict[int, tuple[str, str]]
                 ) -> tuple[Optional[str], Optional[int]]:
        """Topic and log time of a row whose data cannot be read, when its small fields still can."""
        try:
            row = conn.execute("SELECT topic_id, timestamp FROM messages WHERE id = ?", (row_id,)).fetchone()
        except apsw.Error:
            return None, None
        if row is None:
            return None, None
        return topics.get(row[0], (None, ""))[0], int(row[1])


def _probe_ids() -> Iterator[int]:
    """Row ids 1, 2, 3, ... (rosbag2 inserts rows without gaps) when the id index is unreadable."""
    row_id = 1
    while True:
        yield row_id
        row_id += 1


def read_all(path: "str | os.PathLike[str]") -> list[BagMessage]:
    """Every message of a bag (small bags, tests); raises BagCorruptError if it is damaged."""
    return list(open_bag(path).messages())


__all__ = ["Bag", "BagMessage", "BagReadError", "BagCorruptError", "Damage", "TopicInfo", "open_bag", "read_all"]
