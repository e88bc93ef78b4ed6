// The send-stream parser against damaged streams (CRC, truncation, bad header, bounds)
// and hand-built ones (what the kernel here does not emit). Real streams: test_send_stream.cpp.
#include "send_stream_helpers.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace snapdedupe;
using namespace snapdedupe::send;
using namespace snapdedupe::send::test_helpers;

TEST_CASE("a flipped byte is a CRC error naming the command and its offset")
{
    auto bytes = read_bytes(fixture("v1-nodata-all", ".stream"));
    auto target = first_of(parse_file(fixture("v1-nodata-all", ".stream")), Command::UPDATE_EXTENT);
    bytes[target.stream_offset + kCommandHeaderSize + 5] ^= 0x40;
    std::string expected = "bad CRC in UPDATE_EXTENT at byte " + std::to_string(target.stream_offset);
    CHECK(error_of([&] { parse_via_pipe(bytes, 512); }).find(expected) != std::string::npos);
    try {
        parse_via_pipe(bytes, 4096);
        FAIL("no error");
    } catch (const SendStreamError& e) {
        CHECK(e.offset() == target.stream_offset);
        CHECK(e.command() == "UPDATE_EXTENT");
    }
}

TEST_CASE("truncated streams")
{
    auto bytes = read_bytes(fixture("v1-nodata-all", ".stream"));
    auto rename = first_of(parse_file(fixture("v1-nodata-all", ".stream")), Command::RENAME);
    auto cut = [&](std::size_t n) { return std::vector<uint8_t>(bytes.begin(), bytes.begin() + n); };
    const std::string at = " at byte " + std::to_string(rename.stream_offset);

    CHECK(error_of([&] { parse_via_pipe(cut(rename.stream_offset + 15), 100); })
              .find("truncated inside RENAME" + at) != std::string::npos);
    CHECK(error_of([&] { parse_via_pipe(cut(rename.stream_offset + 4), 100); })
              .find("truncated inside command header" + at) != std::string::npos);
    CHECK(error_of([&] { parse_via_pipe(cut(rename.stream_offset), 100); })
              .find("truncated: input ends before the END command" + at) != std::string::npos);
    CHECK(error_of([&] { parse_via_pipe(cut(10), 100); }).find("truncated inside stream header") !=
          std::string::npos);
}

TEST_CASE("bad magic, bad version, empty input, trailing garbage")
{
    auto bytes = read_bytes(fixture("v1-nodata-truncate", ".stream"));
    auto bad_magic = bytes;
    bad_magic[0] = 'B';
    CHECK(error_of([&] { parse_via_pipe(bad_magic, 4096); })
              .find("send stream pipe: not a btrfs send stream (bad magic) at byte 0") != std::string::npos);
    auto bad_version = bytes;
    bad_version[kStreamMagicSize] = 9;
    CHECK(error_of([&] { parse_via_pipe(bad_version, 4096); }).find("unsupported stream version 9") !=
          std::string::npos);
    CHECK(error_of([&] { parse_via_pipe({}, 4096); }).find("not a btrfs send stream") != std::string::npos);
    // After END only a new stream header or EOF may follow.
    auto garbage = bytes;
    garbage.insert(garbage.end(), 4, 'j');
    CHECK(error_of([&] { parse_via_pipe(garbage, 4096); })
              .find("truncated inside stream header at byte " + std::to_string(bytes.size())) != std::string::npos);
    garbage.insert(garbage.end(), 40, 'j');
    CHECK(error_of([&] { parse_via_pipe(garbage, 4096); })
              .find("bad magic) at byte " + std::to_string(bytes.size())) != std::string::npos);
}

TEST_CASE("bounds: a TLV running past its command, an absurd command length")
{
    auto bytes = read_bytes(fixture("v1-nodata-all", ".stream"));
    auto rename = first_of(parse_file(fixture("v1-nodata-all", ".stream")), Command::RENAME);
    const std::size_t at = rename.stream_offset;
    // First TLV of the RENAME is PATH; make it claim more than the command holds, with a
    // valid CRC so only the bounds check can catch it.
    auto long_tlv = bytes;
    store_le(long_tlv, at + kCommandHeaderSize + 2, 0x7000, 2);
    reseal(long_tlv, at);
    CHECK(error_of([&] { parse_via_pipe(long_tlv, 4096); })
              .find("attribute PATH (length 28672) runs past the end of RENAME at byte " +
                    std::to_string(at)) != std::string::npos);

    auto huge = bytes;
    store_le(huge, at, 0x7FFFFFFF, 4);
    CHECK(error_of([&] { parse_via_pipe(huge, 4096); }).find("sanity limit in RENAME at byte " + std::to_string(at)) !=
          std::string::npos);

    StreamBuilder unknown(1);
    unknown.u64(static_cast<Attr>(77), 1).end_command(Command::UTIMES);
    CHECK(error_of([&] { parse_via_pipe(unknown.bytes, 4096); }).find("unknown attribute 77 in UTIMES") !=
          std::string::npos);
    StreamBuilder bad_cmd(1);
    bad_cmd.end_command(static_cast<Command>(200));
    CHECK(error_of([&] { parse_via_pipe(bad_cmd.bytes, 4096); }).find("unknown command 200") != std::string::npos);
}

TEST_CASE("hand-built v1, v2 and v3 commands decode")
{
    StreamBuilder v1(1);
    std::vector<uint8_t> data(300, 1);
    v1.str(Attr::PATH, "f").u64(Attr::FILE_OFFSET, 4096).tlv(Attr::DATA, data.data(), data.size());
    v1.end_command(Command::WRITE).end_command(Command::END);
    auto cmds = parse_via_pipe(v1.bytes, 3);
    REQUIRE(cmds.size() == 2);
    CHECK(cmds[0].cmd == Command::WRITE);
    CHECK(cmds[0].path == std::string("f"));
    CHECK(cmds[0].file_offset == 4096u);
    CHECK(cmds[0].data_len == 300);

    // v2: DATA is type-only and must not be read as a TLV, even when it is large.
    StreamBuilder v2(2);
    v2.str(Attr::PATH, "g").u64(Attr::FILE_OFFSET, 0).v2_data(100000).end_command(Command::WRITE);
    uint32_t mode = 3;
    v2.str(Attr::PATH, "g").tlv(Attr::FALLOCATE_MODE, &mode, 4).u64(Attr::FILE_OFFSET, 8).u64(Attr::SIZE, 16);
    v2.end_command(Command::FALLOCATE);
    v2.str(Attr::PATH, "g").u64(Attr::FILEATTR, 0x10).end_command(Command::FILEATTR);
    v2.end_command(Command::END);
    cmds = parse_via_pipe(v2.bytes, 65536);
    REQUIRE(cmds.size() == 4);
    CHECK(cmds[0].data_len == 100000);
    CHECK(cmds[1].fallocate_mode == 3u);
    CHECK(cmds[1].size == 16u);
    CHECK(cmds[2].cmd == Command::FILEATTR);
    CHECK(cmds[2].fileattr == 0x10u);

    StreamBuilder v3(3);
    uint8_t alg = 1;
    v3.str(Attr::PATH, "h").tlv(Attr::VERITY_ALGORITHM, &alg, 1).end_command(Command::ENABLE_VERITY);
    v3.end_command(Command::END);
    cmds = parse_via_pipe(v3.bytes, 65536);
    REQUIRE(cmds.size() == 2);
    CHECK(cmds[0].cmd == Command::ENABLE_VERITY);
    CHECK(cmds[0].path == std::string("h"));
}
