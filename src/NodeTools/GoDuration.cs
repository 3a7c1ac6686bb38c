using System.Globalization;

namespace ProxyPlanes.NodeTools;

/// <summary>Go's duration syntax ("500ms", "1s", "1m30s", "1h"), as kube-proxy's flags and config take it.</summary>
public static class GoDuration
{
    public static bool TryParse(string text, out TimeSpan duration)
    {
        duration = TimeSpan.Zero;
        var s = text.Trim();
        if (s == "0") return true;
        if (s.Length == 0) return false;
        var total = 0.0;
        var i = 0;
        while (i < s.Length)
        {
            var start = i;
            while (i < s.Length && (char.IsAsciiDigit(s[i]) || s[i] == '.')) i++;
            if (start == i || !double.TryParse(s.AsSpan(start, i - start), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var value)) return false;
            var unitStart = i;
            while (i < s.Length && (char.IsAsciiLetter(s[i]) || s[i] is '\u00b5' or '\u03bc')) i++;
            double? scale = s[unitStart..i] switch
            {
                "ns" => 1e-9,
                "us" or "\u00b5s" or "\u03bcs" => 1e-6, // micro sign or Greek mu, as Go accepts
                "ms" => 1e-3,
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                _ => null,
            };
            if (scale is null) return false;
            total += value * scale.Value;
        }
        duration = TimeSpan.FromTicks((long)Math.Round(total * TimeSpan.TicksPerSecond));
        return true;
    }

    public static string Format(TimeSpan duration) =>
        duration.TotalSeconds >= 1 && duration.Milliseconds == 0
            ? $"{(long)duration.TotalSeconds}s"
            : $"{duration.TotalMilliseconds.ToString(CultureInfo.InvariantCulture)}ms";
}
