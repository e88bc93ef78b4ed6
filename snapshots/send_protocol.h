// The btrfs send-stream wire format: magic, versions, command and attribute numbers.
//
// Numbers are the kernel's (fs/btrfs/send.h, mirrored by btrfs-progs common/send-stream.h);
// they are part of an on-disk/on-pipe ABI and never change, only grow. Checked against
// the kernel header that introduced v2 (FALLOCATE 23, FILEATTR 24 -- first named
// SETFLAGS --, ENCODED_WRITE 25, attributes 25..31) and v3 (ENABLE_VERITY 26, attributes
// 32..35), and against real streams from kernel 6.18 / btrfs-progs 6.2.
//
// Layout, all integers little-endian:
//   stream header: magic "btrfs-stream\0" (13 bytes), u32 version
//   command:       u32 len (payload only), u16 cmd, u32 crc32c, then len bytes of TLVs
//   TLV:           u16 type, u16 len, len bytes of value
// Since v2 the DATA attribute is special: its header is only the u16 type, it is always
// the last attribute and runs to the end of the command (so writes can exceed 64 KiB).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace snapdedupe::send {

// Includes the terminating NUL: the kernel writes sizeof("btrfs-stream") bytes.
inline constexpr char kStreamMagic[] = "btrfs-stream";
inline constexpr std::size_t kStreamMagicSize = sizeof(kStreamMagic); // 13
inline constexpr std::size_t kStreamHeaderSize = kStreamMagicSize + 4; // magic + u32 version
inline constexpr std::size_t kCommandHeaderSize = 10;                  // u32 len, u16 cmd, u32 crc
inline constexpr std::size_t kCommandCrcOffset = 6;                    // where the crc sits in the header
inline constexpr std::size_t kTlvHeaderSize = 4;                       // u16 type, u16 len
inline constexpr std::size_t kV2DataHeaderSize = 2;                    // DATA in v2+: u16 type only

inline constexpr uint32_t kMinVersion = 1;
inline constexpr uint32_t kMaxVersion = 3;

enum class Command : uint16_t {
    UNSPEC = 0,
    SUBVOL = 1,
    SNAPSHOT = 2,
    MKFILE = 3,
    MKDIR = 4,
    MKNOD = 5,
    MKFIFO = 6,
    MKSOCK = 7,
    SYMLINK = 8,
    RENAME = 9,
    LINK = 10,
    UNLINK = 11,
    RMDIR = 12,
    SET_XATTR = 13,
    REMOVE_XATTR = 14,
    WRITE = 15,
    CLONE = 16,
    TRUNCATE = 17,
    CHMOD = 18,
    CHOWN = 19,
    UTIMES = 20,
    END = 21,
    UPDATE_EXTENT = 22, // last of v1
    // Version 2
    FALLOCATE = 23,
    FILEATTR = 24, // called SETFLAGS in early v2 patches; same number
    ENCODED_WRITE = 25,
    // Version 3
    ENABLE_VERITY = 26,
};
inline constexpr uint16_t kMaxCommand = 26;

enum class Attr : uint16_t {
    UNSPEC = 0,
    UUID = 1,
    CTRANSID = 2,
    INO = 3,
    SIZE = 4,
    MODE = 5,
    UID = 6,
    GID = 7,
    RDEV = 8,
    CTIME = 9,
    MTIME = 10,
    ATIME = 11,
    OTIME = 12,
    XATTR_NAME = 13,
    XATTR_DATA = 14,
    PATH = 15,
    PATH_TO = 16,
    PATH_LINK = 17,
    FILE_OFFSET = 18,
    DATA = 19, // v2+: type-only header, runs to the end of the command
    CLONE_UUID = 20,
    CLONE_CTRANSID = 21,
    CLONE_PATH = 22,
    CLONE_OFFSET = 23,
    CLONE_LEN = 24, // last of v1
    // Version 2
    FALLOCATE_MODE = 25,
    FILEATTR = 26, // called SETFLAGS_FLAGS in early v2 patches
    UNENCODED_FILE_LEN = 27,
    UNENCODED_LEN = 28,
    UNENCODED_OFFSET = 29,
    COMPRESSION = 30, // NONE (0) when absent from ENCODED_WRITE
    ENCRYPTION = 31,
    // Version 3
    VERITY_ALGORITHM = 32,
    VERITY_BLOCK_SIZE = 33,
    VERITY_SALT_DATA = 34,
    VERITY_SIG_DATA = 35,
};
inline constexpr uint16_t kMaxAttr = 35;

// Kernel spelling without the BTRFS_SEND_C_ prefix ("UPDATE_EXTENT"); "UNKNOWN" when
// the number is not a command. Inline so the protocol stays one header.
constexpr std::string_view command_name(Command cmd)
{
    switch (cmd) {
    case Command::UNSPEC: return "UNSPEC";
    case Command::SUBVOL: return "SUBVOL";
    case Command::SNAPSHOT: return "SNAPSHOT";
    case Command::MKFILE: return "MKFILE";
    case Command::MKDIR: return "MKDIR";
    case Command::MKNOD: return "MKNOD";
    case Command::MKFIFO: return "MKFIFO";
    case Command::MKSOCK: return "MKSOCK";
    case Command::SYMLINK: return "SYMLINK";
    case Command::RENAME: return "RENAME";
    case Command::LINK: return "LINK";
    case Command::UNLINK: return "UNLINK";
    case Command::RMDIR: return "RMDIR";
    case Command::SET_XATTR: return "SET_XATTR";
    case Command::REMOVE_XATTR: return "REMOVE_XATTR";
    case Command::WRITE: return "WRITE";
    case Command::CLONE: return "CLONE";
    case Command::TRUNCATE: return "TRUNCATE";
    case Command::CHMOD: return "CHMOD";
    case Command::CHOWN: return "CHOWN";
    case Command::UTIMES: return "UTIMES";
    case Command::END: return "END";
    case Command::UPDATE_EXTENT: return "UPDATE_EXTENT";
    case Command::FALLOCATE: return "FALLOCATE";
    case Command::FILEATTR: return "FILEATTR";
    case Command::ENCODED_WRITE: return "ENCODED_WRITE";
    case Command::ENABLE_VERITY: return "ENABLE_VERITY";
    }
    return "UNKNOWN";
}

// Kernel spelling without the BTRFS_SEND_A_ prefix ("PATH_TO"); "UNKNOWN" likewise.
constexpr std::string_view attr_name(Attr attr)
{
    switch (attr) {
    case Attr::UNSPEC: return "UNSPEC";
    case Attr::UUID: return "UUID";
    case Attr::CTRANSID: return "CTRANSID";
    case Attr::INO: return "INO";
    case Attr::SIZE: return "SIZE";
    case Attr::MODE: return "MODE";
    case Attr::UID: return "UID";
    case Attr::GID: return "GID";
    case Attr::RDEV: return "RDEV";
    case Attr::CTIME: return "CTIME";
    case Attr::MTIME: return "MTIME";
    case Attr::ATIME: return "ATIME";
    case Attr::OTIME: return "OTIME";
    case Attr::XATTR_NAME: return "XATTR_NAME";
    case Attr::XATTR_DATA: return "XATTR_DATA";
    case Attr::PATH: return "PATH";
    case Attr::PATH_TO: return "PATH_TO";
    case Attr::PATH_LINK: return "PATH_LINK";
    case Attr::FILE_OFFSET: return "FILE_OFFSET";
    case Attr::DATA: return "DATA";
    case Attr::CLONE_UUID: return "CLONE_UUID";
    case Attr::CLONE_CTRANSID: return "CLONE_CTRANSID";
    case Attr::CLONE_PATH: return "CLONE_PATH";
    case Attr::CLONE_OFFSET: return "CLONE_OFFSET";
    case Attr::CLONE_LEN: return "CLONE_LEN";
    case Attr::FALLOCATE_MODE: return "FALLOCATE_MODE";
    case Attr::FILEATTR: return "FILEATTR";
    case Attr::UNENCODED_FILE_LEN: return "UNENCODED_FILE_LEN";
    case Attr::UNENCODED_LEN: return "UNENCODED_LEN";
    case Attr::UNENCODED_OFFSET: return "UNENCODED_OFFSET";
    case Attr::COMPRESSION: return "COMPRESSION";
    case Attr::ENCRYPTION: return "ENCRYPTION";
    case Attr::VERITY_ALGORITHM: return "VERITY_ALGORITHM";
    case Attr::VERITY_BLOCK_SIZE: return "VERITY_BLOCK_SIZE";
    case Attr::VERITY_SALT_DATA: return "VERITY_SALT_DATA";
    case Attr::VERITY_SIG_DATA: return "VERITY_SIG_DATA";
    }
    return "UNKNOWN";
}

} // namespace snapdedupe::send
