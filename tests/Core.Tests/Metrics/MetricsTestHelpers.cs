using System.Diagnostics;
using System.Globalization;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Metrics;

internal static class MetricsTestHelpers
{

    /// <summary>Metric name → TYPE from the <c># TYPE</c> lines.</summary>
    public static Dictionary<string, string> ParseTypes(string text)
    {
        var types = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in Lines(text))
        {
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                Assert.Equal(4, parts.Length);
                Assert.True(types.TryAdd(parts[2], parts[3]), $"duplicate TYPE for {parts[2]}");
            }
        }

        return types;
    }

    /// <summary>Value of the sample whose series (name plus rendered labels) is exactly <paramref name="series"/>.</summary>
    public static double Sample(string text, string series)
    {
        var prefix = series + " ";
        var matches = Lines(text).Where(l => l.StartsWith(prefix, StringComparison.Ordinal)).ToArray();
        Assert.True(matches.Length == 1, $"expected exactly one sample '{series}', found {matches.Length} in:\n{text}");
        var value = matches[0][prefix.Length..];
        return value switch
        {
            "+Inf" => double.PositiveInfinity,
            "-Inf" => double.NegativeInfinity,
            "NaN" => double.NaN,
            _ => double.Parse(value, NumberStyles.Float, CultureInfo.InvariantCulture),
        };
    }

    public static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
}
