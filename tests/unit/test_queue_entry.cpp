// The text of one queue entry, as packaging/snapper-plugin writes it (parse_queue_entry).
#include "plugin/upkeep/work_queue.h"

#include <doctest/doctest.h>

using namespace snapdedupe;

namespace {

constexpr const char* kFile = "/var/lib/snapdedupe/queue/create-home-42";

struct Parsed {
    std::optional<QueueEntry> entry;
    std::string why;
};

Parsed parse(std::string_view text)
{
    Parsed p;
    p.entry = parse_queue_entry(text, kFile, p.why);
    return p;
}

// The reason an entry is refused; fails the test if it is accepted.
std::string refusal(std::string_view text)
{
    Parsed p = parse(text);
    CHECK_FALSE(p.entry);
    return p.why;
}

} // namespace

TEST_CASE("queue entry: create, as the plugin writes it")
{
    Parsed p = parse("action=create\nsubvolume=/home\nnumber=42\nqueued=2024-06-09T10:00:00+00:00\n");
    REQUIRE(p.entry);
    CHECK(p.entry->action == QueueEntry::Action::kCreate);
    CHECK(p.entry->subvolume == "/home");
    CHECK(p.entry->number == 42);
    CHECK(p.entry->file == kFile);
    CHECK(p.entry->snapshots_dir() == "/home/.snapshots");
    CHECK(p.entry->snapshot_path() == "/home/.snapshots/42/snapshot");
}

TEST_CASE("queue entry: forget, for the root subvolume, in any key order")
{
    Parsed p = parse("number=7\nsubvolume=/\naction=forget");
    REQUIRE(p.entry);
    CHECK(p.entry->action == QueueEntry::Action::kForget);
    CHECK(p.entry->number == 7);
    CHECK(p.entry->snapshot_path() == "/.snapshots/7/snapshot");
}

TEST_CASE("queue entry: other keys and lines without '=' are ignored; a repeated key counts last")
{
    Parsed p = parse("# from 50-snapdedupe\naction=forget\nsubvolume=/data\nnumber=1\nfstype=btrfs\n\naction=create\n");
    REQUIRE(p.entry);
    CHECK(p.entry->action == QueueEntry::Action::kCreate);
    CHECK(p.entry->subvolume == "/data");
}

TEST_CASE("queue entry: missing keys")
{
    CHECK(refusal("") == "unknown action ''");
    CHECK(refusal("subvolume=/home\nnumber=42\n") == "unknown action ''");
    CHECK(refusal("action=create\nnumber=42\n") == "subvolume '' is not an absolute path");
    CHECK(refusal("action=create\nsubvolume=/home\n") == "bad snapshot number ''");
}

TEST_CASE("queue entry: a subvolume must be an absolute path")
{
    CHECK(refusal("action=create\nsubvolume=home\nnumber=1\n") == "subvolume 'home' is not an absolute path");
}

TEST_CASE("queue entry: unknown actions")
{
    for (const char* action : {"delete", "Create", "create-snapshot", "create ", "forget\r"}) {
        CAPTURE(action);
        std::string text = std::string("action=") + action + "\nsubvolume=/home\nnumber=1\n";
        CHECK(refusal(text) == "unknown action '" + std::string(action) + "'");
    }
}

TEST_CASE("queue entry: numbers are 1 to 9 decimal digits")
{
    for (const char* number : {"abc", "-1", "+1", "4 2", " 42", "42 ", "0x10", "1e3", "1234567890"}) {
        CAPTURE(number);
        std::string text = std::string("action=create\nsubvolume=/home\nnumber=") + number + "\n";
        CHECK(refusal(text) == "bad snapshot number '" + std::string(number) + "'");
    }
    Parsed largest = parse("action=create\nsubvolume=/home\nnumber=999999999\n");
    REQUIRE(largest.entry);
    CHECK(largest.entry->number == 999999999);
    Parsed zero = parse("action=create\nsubvolume=/home\nnumber=007\n");
    REQUIRE(zero.entry);
    CHECK(zero.entry->number == 7);
}

TEST_CASE("queue entry: too long")
{
    std::string entry = "action=create\nsubvolume=/home\nnumber=42\n";
    std::string padded = entry + std::string(kMaxQueueEntryBytes - entry.size(), '#');
    REQUIRE(padded.size() == kMaxQueueEntryBytes);
    CHECK(parse(padded).entry); // exactly the limit is fine
    CHECK(refusal(padded + "#") == "too long");
}
