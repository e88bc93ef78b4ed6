// Streaming parser for btrfs send streams: one command at a time, constant memory.
#pragma once

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/labeled_fd.h"
#include "snapshots/send_protocol.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace snapdedupe::send {

// One decoded command. Attributes the command did not carry stay nullopt; payload
// bytes (DATA, XATTR_DATA) are not kept, only their length, so memory stays small.
struct SendCommand {
    Command cmd = Command::UNSPEC;
    uint64_t stream_offset = 0; // offset of the command header in the whole input

    std::optional<std::string> path, path_to, path_link, clone_path, xattr_name;
    std::optional<uint64_t> ino, size, mode, uid, gid, rdev, file_offset, ctransid, clone_ctransid,
        clone_offset, clone_len, fallocate_mode, fileattr, unencoded_file_len, unencoded_len,
        unencoded_offset, compression, encryption;
    std::optional<std::array<uint8_t, 16>> uuid, clone_uuid;
    uint64_t data_len = 0; // length of the DATA or XATTR_DATA payload
};

// A malformed stream. what() reads e.g.
//   "send stream /tmp/x: bad CRC in UPDATE_EXTENT at byte 1234"
// offset is where the offending command (or header) starts; command is its name, empty
// when the problem is not inside a command (bad magic, missing END).
class SendStreamError : public Error {
public:
    SendStreamError(const std::string& source, const std::string& problem, uint64_t offset,
                    std::string command);
    uint64_t offset() const { return offset_; }
    const std::string& command() const { return command_; }

private:
    uint64_t offset_;
    std::string command_;
};

class SendStreamParser {
public:
    // v2 commands are at most ~144 KiB (16 KiB + one 128 KiB compressed extent) and v1
    // ones 64 KiB; anything above this bound is a corrupt length, not a real command,
    // and must not make us allocate it.
    static constexpr uint32_t kMaxCommandSize = 16u << 20;

    // Reads from `stream` (which must outlive the parser); its label names the stream in
    // error messages. Reads the stream header at once, so a file that is not a send stream
    // fails here.
    explicit SendStreamParser(const LabeledFd& stream);

    // Protocol version of the sub-stream being read.
    uint32_t version() const { return version_; }

    // Decodes the next command into out (fully overwritten) and returns true; END is
    // returned like any other command. After END, a further stream header means another
    // sub-stream follows (`btrfs send` of several subvolumes writes one per subvolume)
    // and parsing continues with it; clean EOF there returns false, as do all later
    // calls. EOF anywhere else is a "truncated" SendStreamError; read errors are
    // SysError.
    bool next(SendCommand& out);

private:
    // Fills dst with exactly n bytes; false if EOF came before the first byte, a
    // "truncated" error if it came later.
    bool read_exact(uint8_t* dst, std::size_t n, uint64_t start, const std::string& what);
    bool refill();
    void read_stream_header(uint64_t start);
    void decode_attributes(SendCommand& out, const std::string& cmd_name) const;
    [[noreturn]] void fail(const std::string& problem, uint64_t offset,
                           const std::string& command = {}) const;

    int fd_;
    std::string source_;
    uint32_t version_ = 0;
    bool between_substreams_ = false; // just saw END: a header or clean EOF may follow
    bool finished_ = false;

    // Read-ahead buffer, so the 10-byte command headers do not cost a syscall each.
    std::vector<uint8_t> chunk_;
    std::size_t chunk_pos_ = 0;
    std::size_t chunk_len_ = 0;
    uint64_t consumed_ = 0; // stream offset of chunk_[chunk_pos_]

    // The current command: header + payload. Grows to the largest command seen, which
    // kMaxCommandSize bounds.
    std::vector<uint8_t> command_;
};

} // namespace snapdedupe::send
