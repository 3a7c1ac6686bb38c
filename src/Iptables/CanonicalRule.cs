using System.Globalization;
using System.Net;
using System.Net.Sockets;

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
/// same canonical form are the same rule to the kernel. Anything not understood is kept as written (a word
/// that is no option with the words after it), so an unknown spelling can only make two equal rules look
/// different (a chain rewritten that needed no rewrite), never the reverse.
/// <para>
/// An instance reads rule after rule into buffers it reuses (<see cref="Read"/>): fingerprinting the ~80,000
/// rules of a 10,000-service nat table makes no string per rule, word or option. Not thread-safe.
/// </para>
/// </summary>
public sealed class CanonicalRule
{
    private static readonly string[] Basic = ["-s", "-d", "-i", "-o", "-p"];

    /// <summary>Separates an option from its arguments (and them from each other) inside one item.</summary>
    private const char ArgSeparator = '\u0001';

    /// <summary>Separates the items of the canonical form.</summary>
    private const char ItemSeparator = '\u0002';

    private const int TargetOwner = -1;

    private readonly record struct Word(int Start, int Length, bool Quoted);

    private readonly record struct Item(int Start, int Length);

    private readonly record struct Option(int Owner, Item Text);

    private readonly CharBuffer _words = new();   // the rule's words, quotes and escapes removed
    private readonly CharBuffer _items = new();   // options, module and target names as the canonical form spells them
    private readonly CharBuffer _output = new();
    private readonly Item?[] _basic = new Item?[Basic.Length];
    private Word[] _tokens = new Word[32];
    private Item[] _modules = new Item[8];
    private Option[] _options = new Option[16];
    private Item[] _sorted = new Item[16];
    private int _tokenCount, _moduleCount, _optionCount;

    /// <summary>The canonical form of a rule: the text after <c>-A CHAIN</c> (ours, or iptables-save's).</summary>
    public static string Of(ReadOnlySpan<char> rule) => new CanonicalRule().Read(rule).ToString();

    /// <summary>
    /// The canonical form of <paramref name="rule"/> (the text after <c>-A CHAIN</c>), valid until the next call:
    /// the same characters <see cref="Of"/> returns, in this instance's buffer.
    /// </summary>
    public ReadOnlySpan<char> Read(ReadOnlySpan<char> rule)
    {
        _words.Clear();
        _items.Clear();
        _output.Clear();
        Array.Clear(_basic);
        _tokenCount = _moduleCount = _optionCount = 0;
        Tokenize(rule);

        int? current = null;
        Item? targetName = null;
        var negate = false;
        for (var i = 0; i < _tokenCount; i++)
        {
            var token = Text(_tokens[i]);
            var quoted = _tokens[i].Quoted;
            if (!quoted && token is "!") { negate = true; continue; }
            // The arguments: the words up to the next option or "!" (a quoted word is always an argument).
            var firstArg = i + 1;
            while (i + 1 < _tokenCount && (_tokens[i + 1].Quoted || (!Text(_tokens[i + 1]).StartsWith('-') && Text(_tokens[i + 1]) is not "!"))) i++;
            var args = i + 1 - firstArg;
            var neg = negate;
            negate = false;
            var basicIndex = BasicIndex(token);
            if (quoted || !token.StartsWith('-'))
            {
                // Not an option: kept as written, with its arguments (and its "!"), in the current module.
                current ??= NewModule(default);
                var start = _items.Length;
                if (neg) _items.Append("! ");
                _items.Append('?').Append(token);
                AppendArgs(firstArg, args);
                AddOption(current.Value, start);
            }
            else if (basicIndex >= 0 && args == 1 && _basic[basicIndex] is null && targetName is null)
            {
                var start = _items.Length;
                if (neg) _items.Append("! ");
                _items.Append(token).Append(' ');
                if (basicIndex < 2) AppendAddress(Text(_tokens[firstArg]));
                else _items.Append(Text(_tokens[firstArg]));
                _basic[basicIndex] = new Item(start, _items.Length - start);
            }
            else if (token is "-m" && args == 1 && targetName is null)
            {
                var start = _items.Length;
                if (neg) _items.Append("! ");
                _items.Append(Text(_tokens[firstArg]));
                current = NewModule(new Item(start, _items.Length - start));
            }
            else if (token is "-j" or "-g" && args == 1 && targetName is null)
            {
                var start = _items.Length;
                if (neg) _items.Append("! ");
                _items.Append(token).Append(' ').Append(Text(_tokens[firstArg]));
                targetName = new Item(start, _items.Length - start);
            }
            else
            {
                // An option belongs to the target once there is one, else to the last module (a new unnamed one
                // for each option before the first "-m").
                var start = _items.Length;
                if (neg) _items.Append("! ");
                _items.Append(token);
                AppendArgs(firstArg, args);
                AddOption(targetName is not null ? TargetOwner : current ?? NewModule(default), start);
            }
        }

        foreach (var option in _basic)
            if (option is { } item) _output.Append(Span(item)).Append(ItemSeparator);
        for (var module = 0; module < _moduleCount; module++)
        {
            _output.Append("-m ").Append(Span(_modules[module]));
            AppendNormalised(module, Span(_modules[module]));
            _output.Append(ItemSeparator);
        }
        if (targetName is { } target)
        {
            _output.Append(Span(target));
            AppendNormalised(TargetOwner, Span(target));
        }
        return _output.Written;
    }

    /// <summary>Splits a rule into words: spaces separate them; a double-quoted word may hold spaces and backslash escapes.</summary>
    private void Tokenize(ReadOnlySpan<char> text)
    {
        var i = 0;
        while (i < text.Length)
        {
            if (text[i] == ' ') { i++; continue; }
            var start = _words.Length;
            if (text[i] == '"')
            {
                i++;
                while (i < text.Length && text[i] != '"')
                {
                    if (text[i] == '\\' && i + 1 < text.Length) i++;
                    _words.Append(text[i++]);
                }
                i++;
                AddToken(new Word(start, _words.Length - start, Quoted: true));
            }
            else
            {
                var end = text[i..].IndexOf(' ');
                end = end < 0 ? text.Length : i + end;
                _words.Append(text[i..end]);
                AddToken(new Word(start, _words.Length - start, Quoted: false));
                i = end;
            }
        }
    }

    private static int BasicIndex(ReadOnlySpan<char> token)
    {
        for (var i = 0; i < Basic.Length; i++)
            if (token.SequenceEqual(Basic[i])) return i;
        return -1;
    }

    private ReadOnlySpan<char> Text(Word word) => _words.Written.Slice(word.Start, word.Length);

    private ReadOnlySpan<char> Span(Item item) => _items.Written.Slice(item.Start, item.Length);

    private void AppendArgs(int first, int count)
    {
        for (var arg = first; arg < first + count; arg++) _items.Append(ArgSeparator).Append(Text(_tokens[arg]));
    }

    private void AddToken(Word word)
    {
        if (_tokenCount == _tokens.Length) Array.Resize(ref _tokens, _tokens.Length * 2);
        _tokens[_tokenCount++] = word;
    }

    private int NewModule(Item name)
    {
        if (_moduleCount == _modules.Length) Array.Resize(ref _modules, _modules.Length * 2);
        _modules[_moduleCount] = name;
        return _moduleCount++;
    }

    private void AddOption(int owner, int start)
    {
        if (_optionCount == _options.Length) Array.Resize(ref _options, _options.Length * 2);
        _options[_optionCount++] = new Option(owner, new Item(start, _items.Length - start));
    }

    /// <summary>
    /// The options of one module (or of the target) in one order, each after an item separator, with the
    /// defaults iptables-save adds left out and marks and probabilities as the kernel holds them.
    /// </summary>
    private void AppendNormalised(int owner, ReadOnlySpan<char> name)
    {
        var count = 0;
        for (var o = 0; o < _optionCount; o++)
        {
            if (_options[o].Owner != owner) continue;
            if (Normalised(name, _options[o].Text) is not { } item) continue;
            if (count == _sorted.Length) Array.Resize(ref _sorted, _sorted.Length * 2);
            // Insertion sort (ordinal): a module has a handful of options.
            var at = count++;
            while (at > 0 && Span(_sorted[at - 1]).SequenceCompareTo(Span(item)) > 0)
            {
                _sorted[at] = _sorted[at - 1];
                at--;
            }
            _sorted[at] = item;
        }
        for (var i = 0; i < count; i++) _output.Append(ItemSeparator).Append(Span(_sorted[i]));
    }

    /// <summary>An option as the kernel holds it (a new item), itself, or null for a default iptables-save adds.</summary>
    private Item? Normalised(ReadOnlySpan<char> name, Item item)
    {
        // The option's parts: its name, then its arguments.
        var option = Span(item);
        var split = option.IndexOf(ArgSeparator);
        var first = split < 0 ? option : option[..split];
        var args = split < 0 ? [] : option[(split + 1)..];
        var parts = split < 0 ? 1 : 2 + args.Count(ArgSeparator);
        var arg = args.IndexOf(ArgSeparator) is var next && next >= 0 ? args[..next] : args;
        if (name is "recent" && first is "--rsource" && parts == 1) return null; // the default side
        if (name is "-j REJECT" && first is "--reject-with" && parts == 2 && arg is "icmp-port-unreachable" or "icmp6-port-unreachable") return null; // the default
        if (name is "recent" && first is "--mask" && parts == 2 && IPAddress.TryParse(arg, out var mask) && AllOnes(mask)) return null;
        if (name is "statistic" && first is "--probability" && parts == 2 && double.TryParse(arg, NumberStyles.Float, CultureInfo.InvariantCulture, out var p))
        {
            // libxt_statistic stores lround(p * 2^31); the save prints it back with more digits.
            var start = _items.Length;
            _items.Append("--probability").Append(ArgSeparator).Append(Math.Round(p * 0x80000000L, MidpointRounding.AwayFromZero));
            return new Item(start, _items.Length - start);
        }
        if (name is "-j MARK" && parts == 2)
        {
            (uint Value, uint Mask)? set = first switch
            {
                "--or-mark" when Number(arg) is { } or => (or, or),
                "--xor-mark" when Number(arg) is { } xor => (xor, 0),
                "--set-xmark" => MarkAndMask(arg),
                _ => null,
            };
            if (set is { } mark)
            {
                var start = _items.Length;
                _items.Append("--set-xmark").Append(ArgSeparator).Append("0x").AppendHex(mark.Value).Append("/0x").AppendHex(mark.Mask);
                return new Item(start, _items.Length - start);
            }
        }
        return item;
    }

    private static bool AllOnes(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out var length);
        return !bytes[..length].ContainsAnyExcept((byte)0xff);
    }

    private static uint? Number(ReadOnlySpan<char> text) =>
        text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? uint.TryParse(text[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var hex) ? hex : null
            : uint.TryParse(text, CultureInfo.InvariantCulture, out var value) ? value : null;

    private static (uint Value, uint Mask)? MarkAndMask(ReadOnlySpan<char> text)
    {
        var slash = text.IndexOf('/');
        if (slash < 0 || text[(slash + 1)..].Contains('/') || Number(text[..slash]) is not { } value || Number(text[(slash + 1)..]) is not { } mask) return null;
        return (value, mask);
    }

    /// <summary>An address as the kernel holds it: masked, with a prefix length where the mask is one (<c>/32</c> added when none is given).</summary>
    private void AppendAddress(ReadOnlySpan<char> text)
    {
        var slash = text.IndexOf('/');
        if (!IPAddress.TryParse(slash < 0 ? text : text[..slash], out var address))
        {
            _items.Append(text);
            return;
        }
        Span<byte> bytes = stackalloc byte[16], mask = stackalloc byte[16];
        address.TryWriteBytes(bytes, out var length);
        bytes = bytes[..length];
        mask = mask[..length];
        mask.Clear();
        if (slash < 0) mask.Fill(0xff);
        else if (int.TryParse(text[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var prefix) && prefix <= length * 8)
            for (var bit = 0; bit < prefix; bit++) mask[bit / 8] |= (byte)(0x80 >> (bit % 8));
        else if (IPAddress.TryParse(text[(slash + 1)..], out var m) && m.AddressFamily == address.AddressFamily) m.TryWriteBytes(mask, out _);
        else
        {
            _items.Append(text);
            return;
        }
        for (var i = 0; i < length; i++) bytes[i] &= mask[i];
        var ones = 0;
        while (ones < length * 8 && (mask[ones / 8] & (0x80 >> (ones % 8))) != 0) ones++;
        var contiguous = true;
        for (var bit = ones; bit < length * 8; bit++) contiguous &= (mask[bit / 8] & (0x80 >> (bit % 8))) == 0;
        _items.Append(new IPAddress(bytes)).Append('/');
        if (contiguous) _items.Append(ones);
        else _items.Append(new IPAddress(mask));
    }

    /// <summary>A growable char buffer, reused from rule to rule.</summary>
    private sealed class CharBuffer
    {
        private char[] _chars = new char[256];

        public int Length { get; private set; }

        public ReadOnlySpan<char> Written => _chars.AsSpan(0, Length);

        public void Clear() => Length = 0;

        public CharBuffer Append(char c)
        {
            Ensure(1);
            _chars[Length++] = c;
            return this;
        }

        public CharBuffer Append(ReadOnlySpan<char> text)
        {
            Ensure(text.Length);
            text.CopyTo(_chars.AsSpan(Length));
            Length += text.Length;
            return this;
        }

        public CharBuffer Append(int value) => Format(value, default);

        public CharBuffer Append(double value) => Format(value, default);

        public CharBuffer AppendHex(uint value) => Format(value, "x");

        public CharBuffer Append(IPAddress address)
        {
            Ensure(address.AddressFamily == AddressFamily.InterNetworkV6 ? 65 : 15);
            address.TryFormat(_chars.AsSpan(Length), out var written);
            Length += written;
            return this;
        }

        private CharBuffer Format<T>(T value, ReadOnlySpan<char> format) where T : ISpanFormattable
        {
            Ensure(64);
            value.TryFormat(_chars.AsSpan(Length), out var written, format, CultureInfo.InvariantCulture);
            Length += written;
            return this;
        }

        private void Ensure(int more)
        {
            if (Length + more > _chars.Length) Array.Resize(ref _chars, Math.Max(_chars.Length * 2, Length + more));
        }
    }
}
