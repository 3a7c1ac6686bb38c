using System.Globalization;
using System.Net;
using System.Text;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>
/// <see cref="ProxyPlanes.Iptables.CanonicalRule"/> as it was first written (a string per word, option and
/// rule; main at 3bccfb6), kept as the oracle of <c>CanonicalRuleTests</c>: the buffer-reusing reader must spell
/// every rule as this did, except a stray word (no option), whose arguments and "!" this dropped.
/// </summary>
internal static class ReferenceCanonicalRule
{
    private static readonly string[] Basic = ["-s", "-d", "-i", "-o", "-p"];

    /// <summary>The canonical form of a rule: the text after <c>-A CHAIN</c> (ours, or iptables-save's).</summary>
    public static string Of(ReadOnlySpan<char> rule)
    {
        var tokens = Tokenize(rule);
        var basic = new string?[Basic.Length];
        var modules = new List<(string Name, List<string> Options)>();
        List<string>? current = null, target = null;
        string? targetName = null;
        var negate = false;
        for (var i = 0; i < tokens.Count; i++)
        {
            var (token, quoted) = tokens[i];
            if (!quoted && token == "!") { negate = true; continue; }
            var args = new List<string>();
            while (i + 1 < tokens.Count && (tokens[i + 1].Quoted || (!tokens[i + 1].Text.StartsWith('-') && tokens[i + 1].Text != "!")))
                args.Add(tokens[++i].Text);
            var neg = negate ? "! " : "";
            negate = false;
            var basicIndex = Array.IndexOf(Basic, token);
            if (quoted || !token.StartsWith('-')) (current ??= NewModule(modules, "")).Add("?" + token);
            else if (basicIndex >= 0 && args.Count == 1 && basic[basicIndex] is null && target is null)
                basic[basicIndex] = neg + token + " " + (basicIndex < 2 ? Address(args[0]) : args[0]);
            else if (token == "-m" && args.Count == 1 && target is null) current = NewModule(modules, neg + args[0]);
            else if (token is "-j" or "-g" && args.Count == 1 && target is null)
            {
                targetName = neg + token + " " + args[0];
                target = [];
            }
            else (target ?? current ?? NewModule(modules, "")).Add(args.Count == 0 ? neg + token : neg + token + "\u0001" + string.Join('\u0001', args));
        }

        var text = new StringBuilder();
        foreach (var option in basic)
            if (option is not null) text.Append(option).Append('\u0002');
        foreach (var (name, options) in modules)
        {
            text.Append("-m ").Append(name);
            foreach (var option in Normalised(name, options)) text.Append('\u0002').Append(option);
            text.Append('\u0002');
        }
        if (targetName is not null)
        {
            text.Append(targetName);
            foreach (var option in Normalised(targetName, target!)) text.Append('\u0002').Append(option);
        }
        return text.ToString();
    }

    private static List<string> NewModule(List<(string, List<string>)> modules, string name)
    {
        var options = new List<string>();
        modules.Add((name, options));
        return options;
    }

    /// <summary>A module's or target's options in one order, with the defaults iptables-save adds left out.</summary>
    private static IEnumerable<string> Normalised(string name, List<string> options)
    {
        var result = new List<string>();
        foreach (var option in options)
        {
            var parts = option.Split('\u0001');
            switch (name, parts[0], parts.Length)
            {
                case ("recent", "--rsource", 1): continue; // the default side
                case ("-j REJECT", "--reject-with", 2) when parts[1] is "icmp-port-unreachable" or "icmp6-port-unreachable": continue; // the default
                case ("recent", "--mask", 2) when IPAddress.TryParse(parts[1], out var mask) && mask.GetAddressBytes().All(b => b == 0xff): continue;
                case ("statistic", "--probability", 2) when double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var p):
                    // libxt_statistic stores lround(p * 2^31); the save prints it back with more digits.
                    result.Add("--probability\u0001" + Math.Round(p * 0x80000000L, MidpointRounding.AwayFromZero).ToString(CultureInfo.InvariantCulture));
                    continue;
                case ("-j MARK", "--or-mark", 2) when Number(parts[1]) is { } or:
                    result.Add($"--set-xmark\u00010x{or:x}/0x{or:x}");
                    continue;
                case ("-j MARK", "--xor-mark", 2) when Number(parts[1]) is { } xor:
                    result.Add($"--set-xmark\u00010x{xor:x}/0x0");
                    continue;
                case ("-j MARK", "--set-xmark", 2) when MarkAndMask(parts[1]) is { } set:
                    result.Add($"--set-xmark\u00010x{set.Value:x}/0x{set.Mask:x}");
                    continue;
            }
            result.Add(option);
        }
        result.Sort(StringComparer.Ordinal);
        return result;
    }

    private static uint? Number(string text)
    {
        try { return ParseNumber(text); }
        catch (FormatException) { return null; }
        catch (OverflowException) { return null; }
    }

    private static (uint Value, uint Mask)? MarkAndMask(string text)
    {
        var parts = text.Split('/');
        if (parts.Length != 2 || Number(parts[0]) is not { } value || Number(parts[1]) is not { } mask) return null;
        return (value, mask);
    }

    /// <summary>An address as the kernel holds it: masked, with a prefix length where the mask is one (<c>/32</c> added when none is given).</summary>
    private static string Address(string text)
    {
        var slash = text.IndexOf('/');
        if (!IPAddress.TryParse(slash < 0 ? text : text[..slash], out var address)) return text;
        var bytes = address.GetAddressBytes();
        var mask = new byte[bytes.Length];
        if (slash < 0) Array.Fill(mask, (byte)0xff);
        else if (int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var prefix) && prefix <= bytes.Length * 8)
            for (var bit = 0; bit < prefix; bit++) mask[bit / 8] |= (byte)(0x80 >> (bit % 8));
        else if (IPAddress.TryParse(text.AsSpan(slash + 1), out var m) && m.AddressFamily == address.AddressFamily) mask = m.GetAddressBytes();
        else return text;
        for (var i = 0; i < bytes.Length; i++) bytes[i] &= mask[i];
        var ones = 0;
        while (ones < mask.Length * 8 && (mask[ones / 8] & (0x80 >> (ones % 8))) != 0) ones++;
        var contiguous = true;
        for (var bit = ones; bit < mask.Length * 8; bit++) contiguous &= (mask[bit / 8] & (0x80 >> (bit % 8))) == 0;
        return new IPAddress(bytes) + "/" + (contiguous ? ones.ToString(CultureInfo.InvariantCulture) : new IPAddress(mask).ToString());
    }

    private static uint ParseNumber(string text) =>
        text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? uint.Parse(text[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture)
            : uint.Parse(text, CultureInfo.InvariantCulture);

    private static List<(string Text, bool Quoted)> Tokenize(ReadOnlySpan<char> text)
    {
        var tokens = new List<(string, bool)>();
        var i = 0;
        while (i < text.Length)
        {
            if (text[i] == ' ') { i++; continue; }
            if (text[i] == '"')
            {
                var word = new StringBuilder();
                i++;
                while (i < text.Length && text[i] != '"')
                {
                    if (text[i] == '\\' && i + 1 < text.Length) i++;
                    word.Append(text[i++]);
                }
                i++;
                tokens.Add((word.ToString(), true));
            }
            else
            {
                var end = text[i..].IndexOf(' ');
                end = end < 0 ? text.Length : i + end;
                tokens.Add((text[i..end].ToString(), false));
                i = end;
            }
        }
        return tokens;
    }
}
