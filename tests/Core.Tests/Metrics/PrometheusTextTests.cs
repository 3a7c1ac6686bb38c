using ProxyPlanes.Core.Metrics;

namespace ProxyPlanes.Core.Tests.Metrics;

public class PrometheusTextTests
{
    [Theory]
    [InlineData(0d, "0")]
    [InlineData(1d, "1")]
    [InlineData(-1d, "-1")]
    [InlineData(42d, "42")]
    [InlineData(0.001, "0.001")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(0.00001, "1e-05")]
    [InlineData(0.25, "0.25")]
    [InlineData(16.384, "16.384")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(100000d, "100000")]
    [InlineData(999999d, "999999")]
    [InlineData(1000000d, "1e+06")]
    [InlineData(1234567d, "1.234567e+06")]
    [InlineData(123456.5, "123456.5")]
    [InlineData(1.5e300, "1.5e+300")]
    [InlineData(5e-324, "5e-324")]
    [InlineData(1.7e9, "1.7e+09")]
    [InlineData(double.PositiveInfinity, "+Inf")]
    [InlineData(double.NegativeInfinity, "-Inf")]
    [InlineData(double.NaN, "NaN")]
    public void FormatDouble_Value_MatchesGoStrconvG(double value, string expected)
    {
        Assert.Equal(expected, PrometheusText.FormatDouble(value));
    }

    [Fact]
    public void FormatDouble_NegativeZero_RendersZero()
    {
        Assert.Equal("0", PrometheusText.FormatDouble(-0d));
    }

    [Fact]
    public void FormatDouble_NonRepresentableSum_UsesShortestRoundTrip()
    {
        Assert.Equal("0.30000000000000004", PrometheusText.FormatDouble(0.1 + 0.2));
        Assert.Equal("0.1", PrometheusText.FormatDouble(0.1));
    }

    [Theory]
    [InlineData("plain", "plain")]
    [InlineData("a\\b", "a\\\\b")]
    [InlineData("say \"hi\"", "say \\\"hi\\\"")]
    [InlineData("line1\nline2", "line1\\nline2")]
    public void EscapeLabelValue_SpecialCharacters_Escaped(string input, string expected)
    {
        Assert.Equal(expected, PrometheusText.EscapeLabelValue(input));
    }

    [Fact]
    public void EscapeHelp_BackslashAndNewline_EscapedButQuotesKept()
    {
        Assert.Equal("a\\\\b\\n\"c\"", PrometheusText.EscapeHelp("a\\b\n\"c\""));
    }

    [Theory]
    [InlineData("http.server.duration", "http_server_duration")]
    [InlineData("ok_name:sub", "ok_name:sub")]
    [InlineData("1abc", "_1abc")]
    [InlineData("a-b c", "a_b_c")]
    public void SanitizeMetricName_InvalidCharacters_ReplacedWithUnderscore(string input, string expected)
    {
        Assert.Equal(expected, PrometheusText.SanitizeMetricName(input));
    }

    [Fact]
    public void SanitizeLabelName_Colon_Replaced()
    {
        Assert.Equal("a_b", PrometheusText.SanitizeLabelName("a:b"));
    }

    [Fact]
    public void TagValueToString_NonStringValues_InvariantAndGoLike()
    {
        Assert.Equal("true", PrometheusText.TagValueToString(true));
        Assert.Equal("", PrometheusText.TagValueToString(null));
        Assert.Equal("42", PrometheusText.TagValueToString(42));
        Assert.Equal("0.5", PrometheusText.TagValueToString(0.5));
    }
}
