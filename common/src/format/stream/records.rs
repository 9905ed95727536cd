//! The replication stream's records ([`Record`]) and their fields, as both sides hold them
//! in memory (docs/format.md#replication-stream); their tag bytes and short names.
//!
//! Invariant: every record has exactly one tag ([`Record::tag`]), the one
//! [`super::decoding::decode`] maps back to it.

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// A time to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time {
    /// Seconds since the epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds, below 1,000,000,000.
    pub nanos: u32,
}

/// The attributes every entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attrs {
    /// Permission bits with setuid, setgid and sticky (at most 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Time,
    pub atime: Time,
    /// Xattr names and values (ACLs included), in name order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What kind of special file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    Fifo,
    CharDevice,
    BlockDevice,
}

/// Whether a file entry's data follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// [`Record::Data`] and [`Record::Zeros`] follow, adding up to the size.
    Follows,
    /// No data: the receiver said it holds a file with this hash ([`Record::Held`]).
    Held,
    /// No data: a manifest only describes.
    Described,
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub attrs: Attrs,
    /// Its size in bytes.
    pub size: u64,
    /// The BLAKE3 of its content.
    pub hash: Hash,
    pub data: DataMode,
    /// When it has several names in the version: the group the later names link to.
    pub group: Option<u64>,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Exactly as the entry of the same path in the version the receiver builds on.
    Same,
    /// A directory: its children follow, then [`Record::DirEnd`].
    Dir(Attrs),
    File(FileEntry),
    Symlink {
        attrs: Attrs,
        target: Vec<u8>,
    },
    Special {
        attrs: Attrs,
        kind: SpecialKind,
        rdev: u64,
    },
    /// Another name of the file of this group, sent earlier in this version.
    HardLink {
        group: u64,
    },
}

/// One entry of the directory being described: a name and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// One path component (checked by [`super::check_name`]).
    pub name: Vec<u8>,
    pub kind: Kind,
}

/// The sender's first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The stream format the sender speaks.
    pub format: u32,
    /// The job's name.
    pub job: String,
    /// The source vault's id (its marker's).
    pub vault: String,
    /// The job's source folder (recorded in the replica's job.toml, never read there).
    pub source: String,
    /// The job's settings as TOML (the replica's job starts with them).
    pub settings: String,
}

/// The receiver's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The stream format the receiver speaks.
    pub format: u32,
    /// The replica vault's id.
    pub vault: String,
    /// The replica job's newest version (`n`, directory), if any.
    pub newest: Option<(u64, String)>,
    /// How many hashes follow in [`Record::Held`] records.
    pub held: u64,
}

/// The start of one version (or of a manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionHeader {
    pub n: u64,
    /// `V{n}-{stamp}`.
    pub dir: String,
    /// index.tsv's `created` of the version in the source vault.
    pub created: String,
    /// The version it is described against (its `Same` entries); `None`: no `Same` entry.
    pub base: Option<u64>,
    /// The version root's own attributes.
    pub root: Attrs,
}

/// What one version (or manifest) held, to check against what arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// [`Record::Entry`] records.
    pub entries: u64,
    /// Bytes of file data ([`Record::Data`] payloads and [`Record::Zeros`] lengths).
    pub data_bytes: u64,
}

/// Every record, in both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Sender: who it is and which job.
    Hello(Hello),
    /// Receiver: what the replica holds.
    Welcome(Welcome),
    /// Receiver: hashes of file data it holds from an interrupted run.
    Held(Vec<Hash>),
    /// Sender: a version starts.
    Version(VersionHeader),
    /// An entry of the open directory.
    Entry(Entry),
    /// Bytes of the file being sent.
    Data(Vec<u8>),
    /// This many zero bytes of the file being sent (a hole).
    Zeros(u64),
    /// The open directory is complete.
    DirEnd,
    /// Sender: the version is complete.
    VersionEnd(Counts),
    /// Receiver: the version is durable under its final name.
    Ack { n: u64, dir: String },
    /// Sender: send the manifest of your newest version.
    ManifestRequest,
    /// Receiver: a manifest starts (its entries follow, data [`DataMode::Described`]).
    Manifest(VersionHeader),
    /// Receiver: the manifest is complete.
    ManifestEnd(Counts),
    /// Sender: nothing more.
    Bye,
    /// Either side: refused, why (the other side stops).
    Refused(String),
}

impl Record {
    /// The record's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Record::Hello(_) => b'H',
            Record::Welcome(_) => b'W',
            Record::Held(_) => b'h',
            Record::Version(_) => b'V',
            Record::Entry(_) => b'E',
            Record::Data(_) => b'D',
            Record::Zeros(_) => b'0',
            Record::DirEnd => b')',
            Record::VersionEnd(_) => b'Z',
            Record::Ack { .. } => b'A',
            Record::ManifestRequest => b'?',
            Record::Manifest(_) => b'M',
            Record::ManifestEnd(_) => b'z',
            Record::Bye => b'Q',
            Record::Refused(_) => b'X',
        }
    }

    /// A short name for messages (`entry`, `data`, …).
    pub fn what(&self) -> &'static str {
        match self {
            Record::Hello(_) => "hello",
            Record::Welcome(_) => "welcome",
            Record::Held(_) => "held hashes",
            Record::Version(_) => "version start",
            Record::Entry(_) => "entry",
            Record::Data(_) => "data",
            Record::Zeros(_) => "zeros",
            Record::DirEnd => "end of directory",
            Record::VersionEnd(_) => "end of version",
            Record::Ack { .. } => "acknowledgement",
            Record::ManifestRequest => "manifest request",
            Record::Manifest(_) => "manifest start",
            Record::ManifestEnd(_) => "end of manifest",
            Record::Bye => "bye",
            Record::Refused(_) => "refusal",
        }
    }
}
