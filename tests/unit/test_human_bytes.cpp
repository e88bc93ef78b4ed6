// Byte counts as the report prints them (plugin/cli/human_bytes.h).
#include "plugin/cli/human_bytes.h"

#include <doctest/doctest.h>

#include <limits>

using snapdedupe::human_bytes;

TEST_CASE("human_bytes: whole bytes below 1 KiB")
{
    CHECK(human_bytes(0) == "0 B");
    CHECK(human_bytes(1) == "1 B");
    CHECK(human_bytes(1023) == "1023 B");
}

TEST_CASE("human_bytes: binary units with two decimals from 1 KiB")
{
    CHECK(human_bytes(1024) == "1.00 KiB");
    CHECK(human_bytes(1536) == "1.50 KiB");
    CHECK(human_bytes(1024 * 1024) == "1.00 MiB");
    CHECK(human_bytes(1610612736) == "1.50 GiB"); // 1.5 GiB
    CHECK(human_bytes(int64_t{1} << 40) == "1.00 TiB");
}

TEST_CASE("human_bytes: TiB is the largest unit")
{
    CHECK(human_bytes(int64_t{2048} << 40) == "2048.00 TiB");
}

TEST_CASE("human_bytes: negatives, as differences print")
{
    CHECK(human_bytes(-1) == "-1 B");
    CHECK(human_bytes(-1023) == "-1023 B");
    CHECK(human_bytes(-1024) == "-1.00 KiB");
    CHECK(human_bytes(-1610612736) == "-1.50 GiB");
    // The most negative value has no positive counterpart in int64_t.
    CHECK(human_bytes(std::numeric_limits<int64_t>::min()) == "-8388608.00 TiB");
}
