using System.Globalization;
using System.Text;

namespace ProxyPlanes.Core.Metrics;

/// <summary>
/// Low-level helpers for the Prometheus text exposition format (version 0.0.4).
/// Number formatting mirrors Go's <c>strconv.FormatFloat(f, 'g', -1, 64)</c> as used by
/// client_golang, so bucket <c>le</c> labels are byte-identical to kube-proxy's.
/// </summary>
internal static class PrometheusText
{
    /// <summary>Formats a sample value or <c>le</c> bound exactly like client_golang does.</summary>
    public static string FormatDouble(double value)
    {
        if (double.IsNaN(value))
        {
            return "NaN";
        }

        if (double.IsPositiveInfinity(value))
        {
            return "+Inf";
        }

        if (double.IsNegativeInfinity(value))
        {
            return "-Inf";
        }

        if (value == 0)
        {
            return "0"; // also covers -0, as client_golang does
        }

        // Fast path: integral values below 1e6 print as plain integers in Go's %g.
        if (Math.Abs(value) < 1e6 && value == Math.Floor(value))
        {
            return ((long)value).ToString(CultureInfo.InvariantCulture);
        }

        // Shortest round-trip digits from .NET, re-laid out with Go's %g rules.
        string roundTrip = Math.Abs(value).ToString("R", CultureInfo.InvariantCulture);
        int exponent = 0;
        int e = roundTrip.IndexOfAny(['E', 'e']);
        string mantissa = roundTrip;
        if (e >= 0)
        {
            exponent = int.Parse(roundTrip.AsSpan(e + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            mantissa = roundTrip[..e];
        }

        int dot = mantissa.IndexOf('.');
        string intPart = dot >= 0 ? mantissa[..dot] : mantissa;
        string fracPart = dot >= 0 ? mantissa[(dot + 1)..] : string.Empty;
        string digits = intPart + fracPart;
        int decimalPoint = intPart.Length + exponent; // digits[0..decimalPoint] is the integer part

        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0')
        {
            lead++;
        }

        digits = digits[lead..];
        decimalPoint -= lead;
        digits = digits.TrimEnd('0');
        if (digits.Length == 0)
        {
            return "0";
        }

        var sb = new StringBuilder(32);
        if (value < 0)
        {
            sb.Append('-');
        }

        int exp = decimalPoint - 1;
        if (exp < -4 || exp >= 6)
        {
            // %e: d.ddddde±XX (at least two exponent digits)
            sb.Append(digits[0]);
            if (digits.Length > 1)
            {
                sb.Append('.').Append(digits, 1, digits.Length - 1);
            }

            sb.Append('e').Append(exp < 0 ? '-' : '+');
            int absExp = Math.Abs(exp);
            if (absExp < 10)
            {
                sb.Append('0');
            }

            sb.Append(absExp.ToString(CultureInfo.InvariantCulture));
        }
        else if (decimalPoint <= 0)
        {
            sb.Append("0.").Append('0', -decimalPoint).Append(digits);
        }
        else if (decimalPoint >= digits.Length)
        {
            sb.Append(digits).Append('0', decimalPoint - digits.Length);
        }
        else
        {
            sb.Append(digits, 0, decimalPoint).Append('.').Append(digits, decimalPoint, digits.Length - decimalPoint);
        }

        return sb.ToString();
    }

    /// <summary>Escapes a label value: backslash, double quote and line feed.</summary>
    public static string EscapeLabelValue(string value)
    {
        if (value.AsSpan().IndexOfAny('\\', '"', '\n') < 0)
        {
            return value;
        }

        var sb = new StringBuilder(value.Length + 8);
        foreach (char c in value)
        {
            switch (c)
            {
                case '\\': sb.Append(@"\\"); break;
                case '"': sb.Append("\\\""); break;
                case '\n': sb.Append(@"\n"); break;
                default: sb.Append(c); break;
            }
        }

        return sb.ToString();
    }

    /// <summary>Escapes HELP text: backslash and line feed (double quotes stay as they are).</summary>
    public static string EscapeHelp(string value)
    {
        if (value.AsSpan().IndexOfAny('\\', '\n') < 0)
        {
            return value;
        }

        return value.Replace(@"\", @"\\", StringComparison.Ordinal).Replace("\n", @"\n", StringComparison.Ordinal);
    }

    /// <summary>Maps an arbitrary instrument name onto <c>[a-zA-Z_:][a-zA-Z0-9_:]*</c>.</summary>
    public static string SanitizeMetricName(string name) => Sanitize(name, allowColon: true);

    /// <summary>Maps an arbitrary tag key onto <c>[a-zA-Z_][a-zA-Z0-9_]*</c>.</summary>
    public static string SanitizeLabelName(string name) => Sanitize(name, allowColon: false);

    private static string Sanitize(string name, bool allowColon)
    {
        if (name.Length == 0)
        {
            return "_";
        }

        bool valid = true;
        for (int i = 0; i < name.Length && valid; i++)
        {
            valid = IsValidChar(name[i], i == 0, allowColon);
        }

        if (valid)
        {
            return name;
        }

        var sb = new StringBuilder(name.Length + 1);
        if (char.IsAsciiDigit(name[0]))
        {
            sb.Append('_');
        }

        foreach (char c in name)
        {
            sb.Append(IsValidChar(c, first: false, allowColon) ? c : '_');
        }

        return sb.ToString();
    }

    private static bool IsValidChar(char c, bool first, bool allowColon) =>
        char.IsAsciiLetter(c) || c == '_' || (allowColon && c == ':') || (!first && char.IsAsciiDigit(c));

    /// <summary>Renders a tag value as a label value string (invariant culture, Go-like booleans).</summary>
    public static string TagValueToString(object? value) => value switch
    {
        null => string.Empty,
        string s => s,
        bool b => b ? "true" : "false",
        double d => FormatDouble(d),
        float f => FormatDouble(f),
        IFormattable formattable => formattable.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? string.Empty,
    };

    /// <summary>Renders sorted label pairs as <c>a="x",b="y"</c> (no braces).</summary>
    public static string RenderLabels(IReadOnlyList<KeyValuePair<string, string>> labels)
    {
        if (labels.Count == 0)
        {
            return string.Empty;
        }

        var sb = new StringBuilder();
        for (int i = 0; i < labels.Count; i++)
        {
            if (i > 0)
            {
                sb.Append(',');
            }

            sb.Append(labels[i].Key).Append("=\"").Append(EscapeLabelValue(labels[i].Value)).Append('"');
        }

        return sb.ToString();
    }

    /// <summary>Ordinal, pair-wise comparison of sorted label sets (shorter set first on ties).</summary>
    public static int CompareLabels(KeyValuePair<string, string>[] x, KeyValuePair<string, string>[] y)
    {
        int n = Math.Min(x.Length, y.Length);
        for (int i = 0; i < n; i++)
        {
            int c = string.CompareOrdinal(x[i].Key, y[i].Key);
            if (c != 0)
            {
                return c;
            }

            c = string.CompareOrdinal(x[i].Value, y[i].Value);
            if (c != 0)
            {
                return c;
            }
        }

        return x.Length.CompareTo(y.Length);
    }
}
