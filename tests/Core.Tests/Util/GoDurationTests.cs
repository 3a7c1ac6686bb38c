using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Core.Tests.Util;

public class GoDurationTests
{
    [Theory]
    [InlineData("500ms", 500)]
    [InlineData("1s", 1_000)]
    [InlineData("1m30s", 90_000)]
    [InlineData("1h", 3_600_000)]
    [InlineData("1h30m", 5_400_000)]
    [InlineData("1.5h", 5_400_000)]
    [InlineData("2m", 120_000)]
    [InlineData(".5s", 500)]
    [InlineData("0", 0)]
    [InlineData("0s", 0)]
    [InlineData(" 2s ", 2_000)]
    public void TryParse_ValidDuration_ParsedExactly(string text, long expectedMilliseconds)
    {
        Assert.True(GoDuration.TryParse(text, out var duration));
        Assert.Equal(TimeSpan.FromMilliseconds(expectedMilliseconds), duration);
    }

    [Theory]
    [InlineData("1us", 10)]
    [InlineData("1µs", 10)]
    [InlineData("100ns", 1)]
    public void TryParse_SubMillisecondUnits_Parsed(string text, long expectedTicks)
    {
        Assert.True(GoDuration.TryParse(text, out var duration));
        Assert.Equal(expectedTicks, duration.Ticks);
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("5")] // Go requires a unit on every number but a bare 0
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("s")]
    [InlineData("5x")]
    [InlineData("1h30")]
    [InlineData("1.2.3s")]
    [InlineData("ms5")]
    public void TryParse_Invalid_ReturnsFalse(string text)
    {
        Assert.False(GoDuration.TryParse(text, out var duration));
        Assert.Equal(TimeSpan.Zero, duration);
    }

    [Fact]
    public void TryParse_EveryWholeMillisecondUpTo10s_Exact()
    {
        for (var ms = 0; ms <= 10_000; ms++)
        {
            Assert.True(GoDuration.TryParse($"{ms}ms", out var duration));
            Assert.Equal(ms * TimeSpan.TicksPerMillisecond, duration.Ticks);
        }
    }

    [Theory]
    [InlineData(1_000, "1s")]
    [InlineData(30_000, "30s")]
    [InlineData(90_000, "90s")]
    [InlineData(500, "500ms")]
    [InlineData(1_500, "1500ms")]
    public void Format_Duration_GoSyntax(long milliseconds, string expected)
    {
        var text = GoDuration.Format(TimeSpan.FromMilliseconds(milliseconds));

        Assert.Equal(expected, text);
        Assert.True(GoDuration.TryParse(text, out var back));
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), back);
    }
}
