// The progress line's text (plugin/cli/progress_line.h): what an admin watching `run` reads.
#include "plugin/cli/progress_line.h"

#include <doctest/doctest.h>

using namespace snapdedupe;

TEST_CASE("progress line: durations")
{
    CHECK(duration_text(0) == "0 s");
    CHECK(duration_text(42.4) == "42 s");
    CHECK(duration_text(185) == "3m05s");
    CHECK(duration_text(2 * 3600 + 7 * 60 + 59) == "2h07m");
    CHECK(duration_text(-3) == "0 s");
}

TEST_CASE("progress line: snapshot i of n, bytes of its total, rate, ETA, path")
{
    RunProgress p{3, 10, "/backup/host.20240103", 0, 0};
    CHECK(progress_text(p, 0.2) == "snapshot 3 of 10: reading what changed - /backup/host.20240103");

    p.bytes_total = 400ull << 20;
    p.bytes_done = 100ull << 20;
    CHECK(progress_text(p, 0.5) == "snapshot 3 of 10: 100.00 MiB of 400.00 MiB changed - /backup/host.20240103");
    CHECK(progress_text(p, 2) ==
          "snapshot 3 of 10: 100.00 MiB of 400.00 MiB changed, 50.00 MiB/s, ETA 6 s - /backup/host.20240103");
    p.bytes_done = p.bytes_total;
    CHECK(progress_text(p, 8).find("ETA 0 s") != std::string::npos);
}

TEST_CASE("progress line: control characters in a name do not reach the terminal")
{
    RunProgress p{1, 1, "/snaps/a\033[2Jb\n", 0, 0};
    CHECK(progress_text(p, 0) == "snapshot 1 of 1: reading what changed - /snaps/a?[2Jb?");
}
