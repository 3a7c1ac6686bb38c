using System.Globalization;
using System.Net;
using System.Text;

namespace ProxyPlanes.Iptables;

/// <summary>
/// A rule in one spelling whichever way it was written: iptables-save prints a rule in its own order
/// and with defaults filled in (<c>-d 10.96.0.1/32 -p tcp -m comment --comment "x" -m tcp --dport 80</c> for our
/// <c>-m comment --comment x -m tcp -p tcp -d 10.96.0.1/32 --dport 80</c>; <c>-m recent</c> gains
/// <c>--mask 255.255.255.255 --rsource</c>; <c>MARK --or-mark X</c> reads back <c>--set-xmark X/X</c>; a
/// probability gains a digit), so the text the planner writes never equals the save's. The canonical form:
/// the address/interface/protocol options first (as iptables-save puts them), then each <c>-m</c> module in
/// its place with its options sorted (an option belongs to the last <c>-m</c> before it), then the target
/// with its options sorted; addresses, marks and probabilities as the kernel holds them. Two rules with the
/// same canonical form are the same rule to the kernel. Anything not understood is kept as written, so an
/// unknown spelling can only make two equal rules look different (a chain rewritten that needed no
/// rewrite), never the reverse.
/// </summary>
public static class CanonicalRule
{
    private static readonly string[] Basic = ["-s", "-d", "-i", "-o", "-p"];

    /// <summary>The canonical form of a rule: the text after <c>-A CHAIN</c> (ours, or iptables-save's).</summary>
    public static string Of(ReadOnlySpan<char> rule)
    {
        var tokens = SavedRule.Tokenize(rule);
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
        try { return SavedRule.ParseNumber(text); }
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
}

/// <summary>
/// Per chain of one table, a fingerprint of its rules in order (their <see cref="CanonicalRule"/> forms):
/// what a full sync over rules already in place compares with its plan, without holding the table's text
/// (~10 MB of nat at 10,000 services; a fingerprint is a few words per chain).
/// </summary>
public sealed class ChainDigests
{
    private readonly Dictionary<string, Digest> _chains = new(StringComparer.Ordinal);

    /// <summary>Two independent 64-bit hashes of the canonical rules in order, and their count.</summary>
    public readonly record struct Digest(ulong A, ulong B, int Rules)
    {
        public Digest With(string canonical)
        {
            // FNV-1a over the rule, then folded into the chain's running value (order counts).
            ulong a = 14695981039346656037UL, b = 0x9E3779B97F4A7C15UL;
            foreach (var c in canonical)
            {
                a = (a ^ c) * 1099511628211UL;
                b = (b ^ c) * 0x100000001B3UL + 0x632BE59BD9B4E019UL;
                b ^= b >> 29;
            }
            return new Digest((A ^ a) * 0x9E3779B97F4A7C15UL + 1, (B * 31) ^ b, Rules + 1);
        }
    }

    /// <summary>The chains seen.</summary>
    public int Count => _chains.Count;

    /// <summary>A chain declared (it may hold no rule).</summary>
    public void Declare(string chain) => _chains.TryAdd(chain, default);

    /// <summary>The next rule of <paramref name="chain"/>, the text after <c>-A CHAIN</c>.</summary>
    public void Rule(string chain, ReadOnlySpan<char> rule)
    {
        _chains.TryGetValue(chain, out var digest);
        _chains[chain] = digest.With(CanonicalRule.Of(rule));
    }

    public bool TryGet(string chain, out Digest digest) => _chains.TryGetValue(chain, out digest);

    /// <summary>Every chain seen with its digest.</summary>
    public IEnumerable<KeyValuePair<string, Digest>> All => _chains;

    /// <summary>Feeds one line of a table's iptables-save (or of a restore script's table): <c>:CHAIN</c> and <c>-A CHAIN rule</c> lines.</summary>
    public void Line(ReadOnlySpan<char> raw)
    {
        var line = raw.TrimEnd('\r');
        if (line.StartsWith(':'))
        {
            var end = line.IndexOf(' ');
            Declare((end < 0 ? line[1..] : line[1..end]).ToString());
        }
        else if (line.StartsWith("-A ", StringComparison.Ordinal))
        {
            var end = line[3..].IndexOf(' ');
            var chain = end < 0 ? line[3..] : line.Slice(3, end);
            Rule(chain.ToString(), end < 0 ? [] : line[(3 + end + 1)..]);
        }
    }
}
