#include "snapshots/send_stream.h"

#include "snapshots/crc32c.h"
#include "snapshots/kernel/error.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace snapdedupe::send {

namespace {

constexpr std::size_t kChunkSize = 64 * 1024;

uint16_t load_le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

uint32_t load_le32(const uint8_t* p)
{
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
           (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// The kernel writes most integers as u64 but some as u32 or u8 (FALLOCATE_MODE,
// COMPRESSION, VERITY_ALGORITHM...), so any power-of-two width is accepted.
std::optional<uint64_t> load_le_uint(const uint8_t* p, std::size_t len)
{
    if (len != 1 && len != 2 && len != 4 && len != 8)
        return std::nullopt;
    uint64_t value = 0;
    for (std::size_t i = len; i-- > 0;)
        value = (value << 8) | p[i];
    return value;
}

std::string name_of(uint16_t cmd)
{
    if (cmd == 0 || cmd > kMaxCommand)
        return "command " + std::to_string(cmd);
    return std::string(command_name(static_cast<Command>(cmd)));
}

std::string name_of_attr(uint16_t attr)
{
    if (attr == 0 || attr > kMaxAttr)
        return "attribute " + std::to_string(attr);
    return "attribute " + std::string(attr_name(static_cast<Attr>(attr)));
}

} // namespace

SendStreamError::SendStreamError(const std::string& source, const std::string& problem,
                                 uint64_t offset, std::string command)
    : Error(ExitCode::kBadStream, "send stream " + source + ": " + problem + " at byte " +
                         std::to_string(offset)),
      offset_(offset), command_(std::move(command))
{
}

SendStreamParser::SendStreamParser(const LabeledFd& stream)
    : fd_(stream.get()), source_(stream.label()), chunk_(kChunkSize)
{
    read_stream_header(0);
}

void SendStreamParser::fail(const std::string& problem, uint64_t offset,
                            const std::string& command) const
{
    throw SendStreamError(source_, problem, offset, command);
}

bool SendStreamParser::refill()
{
    for (;;) {
        ssize_t got = ::read(fd_, chunk_.data(), chunk_.size());
        if (got < 0 && errno == EINTR)
            continue;
        check_sys(got, "read send stream", source_);
        chunk_pos_ = 0;
        chunk_len_ = static_cast<std::size_t>(got);
        return got > 0;
    }
}

bool SendStreamParser::read_exact(uint8_t* dst, std::size_t n, uint64_t start,
                                  const std::string& what)
{
    std::size_t done = 0;
    while (done < n) {
        if (chunk_pos_ == chunk_len_ && !refill()) {
            if (done == 0)
                return false;
            fail("truncated inside " + what, start, what);
        }
        // A pipe hands out whatever is buffered; short reads just mean "loop".
        std::size_t take = std::min(n - done, chunk_len_ - chunk_pos_);
        std::memcpy(dst + done, chunk_.data() + chunk_pos_, take);
        chunk_pos_ += take;
        consumed_ += take;
        done += take;
    }
    return true;
}

void SendStreamParser::read_stream_header(uint64_t start)
{
    uint8_t header[kStreamHeaderSize];
    if (!read_exact(header, sizeof header, start, "stream header"))
        fail("not a btrfs send stream (empty input)", start);
    if (std::memcmp(header, kStreamMagic, kStreamMagicSize) != 0)
        fail("not a btrfs send stream (bad magic)", start);
    uint32_t version = load_le32(header + kStreamMagicSize);
    if (version < kMinVersion || version > kMaxVersion)
        fail("unsupported stream version " + std::to_string(version), start);
    version_ = version;
}

bool SendStreamParser::next(SendCommand& out)
{
    if (finished_)
        return false;

    if (between_substreams_) {
        // Peek one byte: clean EOF ends the input, anything else must be a new header.
        if (chunk_pos_ == chunk_len_ && !refill()) {
            finished_ = true;
            return false;
        }
        read_stream_header(consumed_);
        between_substreams_ = false;
    }

    const uint64_t start = consumed_;
    uint8_t header[kCommandHeaderSize];
    if (!read_exact(header, sizeof header, start, "command header"))
        fail("truncated: input ends before the END command", start);

    const uint32_t payload_len = load_le32(header);
    const uint16_t cmd = load_le16(header + 4);
    const uint32_t stored_crc = load_le32(header + kCommandCrcOffset);
    const std::string cmd_name = name_of(cmd);

    if (payload_len > kMaxCommandSize)
        fail("command length " + std::to_string(payload_len) + " exceeds the " +
                 std::to_string(kMaxCommandSize) + "-byte sanity limit in " + cmd_name,
             start, cmd_name);

    command_.resize(kCommandHeaderSize + payload_len);
    std::memcpy(command_.data(), header, kCommandHeaderSize);
    if (payload_len > 0 &&
        !read_exact(command_.data() + kCommandHeaderSize, payload_len, start, cmd_name))
        fail("truncated inside " + cmd_name, start, cmd_name);

    // The crc covers header and payload with the crc field itself zeroed.
    std::memset(command_.data() + kCommandCrcOffset, 0, 4);
    if (crc32c(0, command_.data(), command_.size()) != stored_crc)
        fail("bad CRC in " + cmd_name, start, cmd_name);

    if (cmd == 0 || cmd > kMaxCommand)
        fail("unknown " + cmd_name, start, cmd_name);

    out = SendCommand{};
    out.cmd = static_cast<Command>(cmd);
    out.stream_offset = start;
    decode_attributes(out, cmd_name);

    if (out.cmd == Command::END)
        between_substreams_ = true;
    return true;
}

void SendStreamParser::decode_attributes(SendCommand& out, const std::string& cmd_name) const
{
    const uint8_t* const payload = command_.data() + kCommandHeaderSize;
    const std::size_t payload_len = command_.size() - kCommandHeaderSize;
    const uint64_t at = out.stream_offset;

    std::size_t pos = 0;
    while (pos < payload_len) {
        if (payload_len - pos < kV2DataHeaderSize)
            fail("attribute header runs past the end of " + cmd_name, at, cmd_name);
        const uint16_t type = load_le16(payload + pos);

        if (type == static_cast<uint16_t>(Attr::DATA) && version_ >= 2) {
            // v2+: no length field; the data is the rest of the command.
            out.data_len = payload_len - pos - kV2DataHeaderSize;
            return;
        }

        if (payload_len - pos < kTlvHeaderSize)
            fail(name_of_attr(type) + " header runs past the end of " + cmd_name, at, cmd_name);
        const std::size_t len = load_le16(payload + pos + 2);
        const uint8_t* value = payload + pos + kTlvHeaderSize;
        if (len > payload_len - pos - kTlvHeaderSize)
            fail(name_of_attr(type) + " (length " + std::to_string(len) +
                     ") runs past the end of " + cmd_name,
                 at, cmd_name);
        pos += kTlvHeaderSize + len;

        if (type == 0 || type > kMaxAttr)
            fail("unknown " + name_of_attr(type) + " in " + cmd_name, at, cmd_name);

        auto as_uint = [&](std::optional<uint64_t>& field) {
            field = load_le_uint(value, len);
            if (!field)
                fail("bad length " + std::to_string(len) + " of " + name_of_attr(type) + " in " +
                         cmd_name,
                     at, cmd_name);
        };
        auto as_string = [&](std::optional<std::string>& field) {
            field.emplace(reinterpret_cast<const char*>(value), len);
        };
        auto as_uuid = [&](std::optional<std::array<uint8_t, 16>>& field) {
            if (len != 16)
                fail("bad length " + std::to_string(len) + " of " + name_of_attr(type) + " in " +
                         cmd_name,
                     at, cmd_name);
            field.emplace();
            std::memcpy(field->data(), value, 16);
        };

        switch (static_cast<Attr>(type)) {
        case Attr::UUID: as_uuid(out.uuid); break;
        case Attr::CLONE_UUID: as_uuid(out.clone_uuid); break;
        case Attr::CTRANSID: as_uint(out.ctransid); break;
        case Attr::INO: as_uint(out.ino); break;
        case Attr::SIZE: as_uint(out.size); break;
        case Attr::MODE: as_uint(out.mode); break;
        case Attr::UID: as_uint(out.uid); break;
        case Attr::GID: as_uint(out.gid); break;
        case Attr::RDEV: as_uint(out.rdev); break;
        case Attr::FILE_OFFSET: as_uint(out.file_offset); break;
        case Attr::CLONE_CTRANSID: as_uint(out.clone_ctransid); break;
        case Attr::CLONE_OFFSET: as_uint(out.clone_offset); break;
        case Attr::CLONE_LEN: as_uint(out.clone_len); break;
        case Attr::FALLOCATE_MODE: as_uint(out.fallocate_mode); break;
        case Attr::FILEATTR: as_uint(out.fileattr); break;
        case Attr::UNENCODED_FILE_LEN: as_uint(out.unencoded_file_len); break;
        case Attr::UNENCODED_LEN: as_uint(out.unencoded_len); break;
        case Attr::UNENCODED_OFFSET: as_uint(out.unencoded_offset); break;
        case Attr::COMPRESSION: as_uint(out.compression); break;
        case Attr::ENCRYPTION: as_uint(out.encryption); break;
        case Attr::PATH: as_string(out.path); break;
        case Attr::PATH_TO: as_string(out.path_to); break;
        case Attr::PATH_LINK: as_string(out.path_link); break;
        case Attr::CLONE_PATH: as_string(out.clone_path); break;
        case Attr::XATTR_NAME: as_string(out.xattr_name); break;
        case Attr::DATA: // v1: an ordinary TLV
        case Attr::XATTR_DATA: out.data_len = len; break;
        case Attr::UNSPEC:
        case Attr::CTIME:
        case Attr::MTIME:
        case Attr::ATIME:
        case Attr::OTIME:
        case Attr::VERITY_ALGORITHM:
        case Attr::VERITY_BLOCK_SIZE:
        case Attr::VERITY_SALT_DATA:
        case Attr::VERITY_SIG_DATA:
            break; // bounds-checked above; nothing downstream needs the value
        }
    }
}

} // namespace snapdedupe::send
