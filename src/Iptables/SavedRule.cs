using System.Globalization;
using System.Net;
using System.Text;

namespace ProxyPlanes.Iptables;

/// <summary>
/// One word of an iptables-save rule before its target: an option with its arguments (<c>! -s
/// 10.0.0.0/8</c> is negated <c>-s</c> with one argument), or, with <see cref="Stray"/>, a word that is
/// no option at all (left for the reader to call not understood).
/// </summary>
public readonly record struct RuleMatch(bool Negated, string Option, string[] Args, bool Stray = false);

/// <summary>
/// An iptables-save rule (the text after <c>-A CHAIN</c>) read into its parts, for the tracers of
/// <c>proxyplanes explain</c> (the iptables and IPVS modes both walk iptables rules). It only splits
/// and reads words; which options a reader understands, and what they mean for a packet, is the reader's.
/// </summary>
public sealed class SavedRule
{
    private static readonly Dictionary<string, SavedRule> Cache = new(StringComparer.Ordinal);

    private readonly List<RuleMatch> _matches = [];
    private readonly List<(string Option, string[] Args)> _targetOptions = [];

    private SavedRule()
    {
    }

    /// <summary>The options before the target (and stray words), in order.</summary>
    public IReadOnlyList<RuleMatch> Matches => _matches;

    /// <summary>The target of <c>-j</c> / <c>-g</c>, or null for a rule without one.</summary>
    public string? Target { get; private set; }

    /// <summary>Whether the target is a <c>-g</c> (goto: the calling chain does not resume).</summary>
    public bool IsGoto { get; private set; }

    /// <summary>The first argument of the target's option <paramref name="option"/> (e.g. <c>--to-destination</c>), or null.</summary>
    public string? TargetOption(string option) => _targetOptions.FirstOrDefault(o => o.Option == option).Args?.FirstOrDefault();

    /// <summary>Reads a rule; the same text is read once (rules repeat across questions).</summary>
    public static SavedRule Parse(string text)
    {
        lock (Cache)
        {
            if (Cache.TryGetValue(text, out var cached)) return cached;
            if (Cache.Count > 100_000) Cache.Clear();
            var rule = new SavedRule();
            rule.Read(Tokenize(text));
            Cache[text] = rule;
            return rule;
        }
    }

    /// <summary>The packet mark after the MARK target's options (<c>--or-mark</c>, <c>--xor-mark</c>, <c>--and-mark</c>, <c>--set-[x]mark</c>).</summary>
    public uint NewMark(uint mark)
    {
        foreach (var (option, args) in _targetOptions)
        {
            if (args.Length == 0) continue;
            var (value, mask) = ValueAndMask(args[0]);
            mark = option switch
            {
                "--or-mark" => mark | value,
                "--xor-mark" => mark ^ value,
                "--and-mark" => mark & value,
                "--set-mark" or "--set-xmark" => (mark & ~mask) ^ value,
                _ => mark,
            };
        }
        return mark;
    }

    /// <summary>
    /// Whether <paramref name="address"/> matches "ADDRESS/MASK" with the mask written as an address
    /// (iptables-save prints a mask that is not a prefix that way: <c>0.0.0.5/0.0.0.63</c>, <c>::5/::3f</c>).
    /// </summary>
    public static bool InMaskedAddress(string text, IPAddress address)
    {
        var slash = text.IndexOf('/');
        if (slash < 0 || !IPAddress.TryParse(text.AsSpan(0, slash), out var value) || !IPAddress.TryParse(text.AsSpan(slash + 1), out var mask)) return false;
        if (value.AddressFamily != address.AddressFamily || mask.AddressFamily != address.AddressFamily) return false;
        var (a, v, m) = (address.GetAddressBytes(), value.GetAddressBytes(), mask.GetAddressBytes());
        for (var i = 0; i < a.Length; i++)
            if ((a[i] & m[i]) != (v[i] & m[i])) return false;
        return true;
    }

    /// <summary>Whether <paramref name="mark"/> matches <c>-m mark --mark VALUE[/MASK]</c>.</summary>
    public static bool MarkMatches(string valueAndMask, uint mark)
    {
        var (value, mask) = ValueAndMask(valueAndMask);
        return (mark & mask) == value;
    }

    /// <summary>Whether <paramref name="port"/> is in <c>PORT</c> or <c>LOW:HIGH</c>.</summary>
    public static bool InPorts(string text, int port)
    {
        var range = text.Split(':');
        if (!int.TryParse(range[0], CultureInfo.InvariantCulture, out var low)) return false;
        var high = range.Length > 1 && int.TryParse(range[1], CultureInfo.InvariantCulture, out var h) ? h : low;
        return port >= low && port <= high;
    }

    /// <summary>A number as iptables-save prints it: decimal, or hexadecimal after <c>0x</c>.</summary>
    public static uint ParseNumber(string text) =>
        text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? uint.Parse(text[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture)
            : uint.Parse(text, CultureInfo.InvariantCulture);

    private static (uint Value, uint Mask) ValueAndMask(string text)
    {
        var parts = text.Split('/');
        return (ParseNumber(parts[0]), parts.Length > 1 ? ParseNumber(parts[1]) : uint.MaxValue);
    }

    private void Read(List<(string Text, bool Quoted)> tokens)
    {
        var negate = false;
        var inTarget = false;
        for (var i = 0; i < tokens.Count; i++)
        {
            var (token, quoted) = tokens[i];
            if (!quoted && token == "!") { negate = true; continue; }
            if (quoted || !token.StartsWith('-')) { _matches.Add(new RuleMatch(false, token, [], Stray: true)); continue; }
            var args = new List<string>();
            while (i + 1 < tokens.Count && (tokens[i + 1].Quoted || (!tokens[i + 1].Text.StartsWith('-') && tokens[i + 1].Text != "!")))
                args.Add(tokens[++i].Text);
            if (token is "-j" or "-g" or "--jump" or "--goto")
            {
                Target = args.FirstOrDefault();
                IsGoto = token is "-g" or "--goto";
                inTarget = true;
            }
            else if (inTarget) _targetOptions.Add((token, args.ToArray()));
            else _matches.Add(new RuleMatch(negate, token, args.ToArray()));
            negate = false;
        }
    }

    /// <summary>Words of an iptables-save rule; a double-quoted word (a comment) may hold spaces and \" escapes.</summary>
    internal static List<(string Text, bool Quoted)> Tokenize(ReadOnlySpan<char> text)
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
