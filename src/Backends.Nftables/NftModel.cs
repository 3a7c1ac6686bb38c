using System.Globalization;
using System.Text;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// One object of an nftables table, as the planner describes it. The same records serve every
/// verb: <c>add</c> needs the full definition, <c>flush</c> and <c>delete</c> only the name (and,
/// for elements, the key). Appliers (the <c>nft</c> process today, netlink later) consume these
/// records, never text, so the planner does not change when the applier does.
/// </summary>
public abstract record NftObject
{
    /// <summary>The nft keyword of this kind of object: table, chain, rule, set, map, element.</summary>
    public abstract string Kind { get; }
}

/// <summary>The table itself (its family and name belong to the transaction).</summary>
public sealed record NftTable : NftObject
{
    public override string Kind => "table";
    public string? Comment { get; init; }
}

/// <summary>
/// What makes a chain a base chain: attached to a netfilter hook at a priority. Always rendered
/// with <c>policy accept</c>, so re-adding the chain also repairs a policy changed behind our back.
/// </summary>
public sealed record NftBaseChain(string Type, string Hook, int Priority)
{
    public override string ToString() => $"type {Type} hook {Hook} priority {Priority.ToString(System.Globalization.CultureInfo.InvariantCulture)} ; policy accept";
}

/// <summary>A chain; a base chain when <see cref="Base"/> is set.</summary>
public sealed record NftChain(string Name) : NftObject
{
    public override string Kind => "chain";
    public NftBaseChain? Base { get; init; }
    public string? Comment { get; init; }
}

/// <summary>
/// A rule appended to <see cref="Chain"/>. <see cref="Text"/> is nft rule syntax; the chains it
/// jumps to (<c>jump X</c>, <c>goto X</c>) and the sets and maps it uses (<c>@X</c>) are read from
/// it, as knftables does, so references can be checked.
/// </summary>
public sealed record NftRule(string Chain, string Text) : NftObject
{
    public override string Kind => "rule";
    public string? Comment { get; init; }

    /// <summary>Chains this rule jumps or goes to.</summary>
    public IEnumerable<string> ChainReferences => Nft.ChainReferences(Text);

    /// <summary>Sets and maps this rule looks up or updates.</summary>
    public IEnumerable<string> SetReferences => Nft.SetReferences(Text);
}

/// <summary>A named set: its key type (one type, or several concatenated), flags and default timeout.</summary>
public sealed record NftSet(string Name) : NftObject
{
    public override string Kind => "set";
    public EquatableArray<string> Type { get; init; } = EquatableArray<string>.Empty;
    public EquatableArray<string> Flags { get; init; } = EquatableArray<string>.Empty;
    public int? TimeoutSeconds { get; init; }
    public string? Comment { get; init; }

    /// <summary>Same kernel object (type, flags, timeout); the comment does not count.</summary>
    public bool SameDefinition(NftSet other) =>
        Type.Equals(other.Type) && Flags.Order(StringComparer.Ordinal).SequenceEqual(other.Flags.Order(StringComparer.Ordinal)) && TimeoutSeconds == other.TimeoutSeconds;
}

/// <summary>
/// A named map from keys of <see cref="Type"/> to values of <see cref="ValueType"/> (e.g. verdict,
/// or a concatenation such as <c>ipv4_addr . inet_service</c>). <see cref="Type"/> and
/// <see cref="ValueType"/> are always the kernel's datatypes, as <c>nft -j list</c> reports them (so a
/// full sync compares definitions); a map whose key no named type describes (a <c>numgen</c> result
/// is a plain 32-bit <c>integer</c>; the rule converts it to network byte order before the lookup, so the map stores it big-endian) is declared with <see cref="KeyTypeof"/> and
/// <see cref="ValueTypeof"/>, the expressions nft's <c>typeof</c> takes.
/// </summary>
public sealed record NftMap(string Name) : NftObject
{
    public override string Kind => "map";
    public EquatableArray<string> Type { get; init; } = EquatableArray<string>.Empty;
    public string ValueType { get; init; } = "";
    public EquatableArray<string> Flags { get; init; } = EquatableArray<string>.Empty;
    public string? Comment { get; init; }

    /// <summary><c>typeof KEY : VALUE</c> instead of <c>type</c>, e.g. <c>numgen random mod 4096</c>.</summary>
    public string? KeyTypeof { get; init; }

    /// <summary>The value's <c>typeof</c> expression, e.g. <c>ip daddr . tcp dport</c>; set with <see cref="KeyTypeof"/>.</summary>
    public string? ValueTypeof { get; init; }

    /// <summary>What an element of this map is, for an encoder of elements (e.g. a netlink applier).</summary>
    public NftElementTypes ElementTypes => new(Type, ValueType, Flags.Contains("interval"));

    public bool SameDefinition(NftMap other) =>
        Type.Equals(other.Type) && ValueType == other.ValueType && Flags.Order(StringComparer.Ordinal).SequenceEqual(other.Flags.Order(StringComparer.Ordinal));
}

/// <summary>
/// An element of the set or map <see cref="Set"/>: the key's parts (one per concatenated type), and
/// for a map its value (a verdict such as <c>goto service-…</c> or <c>drop</c>).
/// </summary>
public sealed record NftElement(string Set, EquatableArray<string> Key) : NftObject
{
    public override string Kind => "element";
    public string? Value { get; init; }

    /// <summary>
    /// The key's and value's datatypes of the set or map the element belongs to, when the planner
    /// knows them (it sets them on every element it writes): what an encoder other than nft (a
    /// netlink applier) needs, as a partial sync's elements come without their map's definition.
    /// </summary>
    public NftElementTypes? Types { get; init; }

    /// <summary>Says what the element is for (the service port and its frontend, as kube-proxy's comments do); <c>nft list</c> shows it.</summary>
    public string? Comment { get; init; }

    public NftElement(string set, params string[] key) : this(set, new EquatableArray<string>(key))
    {
    }

    /// <summary>The key as nft writes it: parts joined with " . ".</summary>
    public string KeyText => string.Join(" . ", Key);

    /// <summary>The chain a verdict value jumps or goes to, if any.</summary>
    public string? ChainReference => Value is null ? null : Nft.ChainReference(Value);

    /// <summary>The element as <c>add element</c> writes it: key, comment, value.</summary>
    public override string ToString() =>
        (Comment is null ? KeyText : $"{KeyText} comment \"{Comment}\"") + (Value is null ? "" : $" : {Value}");
}

/// <summary>
/// The datatypes of a set's or map's elements, as the kernel knows them: the key's parts (e.g.
/// <c>ipv4_addr</c>, <c>inet_proto</c>, <c>inet_service</c>; <c>integer</c> is 32 bits in host byte
/// order, as <c>numgen</c> writes it), the value (<c>verdict</c>, a concatenation
/// <c>ipv4_addr . inet_service</c>, or null for a set), and whether keys are intervals
/// (<c>LOW-HIGH</c> or a prefix in the key text).
/// </summary>
public sealed record NftElementTypes(EquatableArray<string> Key, string? Value, bool Interval)
{
    public static NftElementTypes Of(NftSet set) => new(set.Type, null, set.Flags.Contains("interval"));
}

public enum NftVerb { Add, Flush, Delete }

/// <summary>One command of a transaction.</summary>
public readonly record struct NftOperation(NftVerb Verb, NftObject Object);

/// <summary>A transaction the kernel rejected as a whole, or that validation refused before it was run.</summary>
public sealed class NftException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// An ordered list of operations on one table, applied atomically (one <c>nft -f -</c> run, one
/// netlink batch). Objects are validated as they are added (names, verbs, syntax that would
/// let one command spill into the next), as knftables does; whether referenced objects exist is
/// the kernel's (or <see cref="FakeNftables"/>'s) business. <see cref="ToString"/> is exactly
/// the input <c>nft -f -</c> gets.
/// </summary>
public sealed class NftTransaction
{
    private readonly List<NftOperation> _operations = [];

    public NftTransaction(IpFamily family, string table)
    {
        Nft.ValidateName(table, "table");
        Family = family;
        Table = table;
    }

    public IpFamily Family { get; }
    public string Table { get; }

    /// <summary>"ip" or "ip6".</summary>
    public string FamilyKeyword => Nft.FamilyKeyword(Family);

    public IReadOnlyList<NftOperation> Operations => _operations;
    public bool IsEmpty => _operations.Count == 0;

    public int Count(NftVerb verb, string kind) => _operations.Count(o => o.Verb == verb && o.Object.Kind == kind);

    /// <summary>Rules added (<c>Count(Add, "rule")</c>, counted as they are added).</summary>
    public int RulesAdded { get; private set; }

    /// <summary>Elements added (<c>Count(Add, "element")</c>, counted as they are added).</summary>
    public int ElementsAdded { get; private set; }

    public NftTransaction Add(NftObject obj)
    {
        Validate(NftVerb.Add, obj);
        _operations.Add(new NftOperation(NftVerb.Add, obj));
        if (obj is NftRule) RulesAdded++;
        else if (obj is NftElement) ElementsAdded++;
        return this;
    }

    public NftTransaction Flush(NftObject obj)
    {
        if (obj is NftRule or NftElement) throw new NftException($"cannot flush a {obj.Kind}");
        Validate(NftVerb.Flush, obj);
        _operations.Add(new NftOperation(NftVerb.Flush, obj));
        return this;
    }

    public NftTransaction Delete(NftObject obj)
    {
        if (obj is NftRule) throw new NftException("rules are deleted by flushing their chain");
        Validate(NftVerb.Delete, obj);
        _operations.Add(new NftOperation(NftVerb.Delete, obj));
        return this;
    }

    private static void Validate(NftVerb verb, NftObject obj)
    {
        switch (obj)
        {
            case NftTable table:
                Nft.ValidateComment(table.Comment);
                break;
            case NftChain chain:
                Nft.ValidateName(chain.Name, "chain");
                Nft.ValidateComment(chain.Comment);
                if (chain.Base is { } b)
                {
                    if (b.Type is not ("filter" or "nat" or "route")) throw new NftException($"chain {chain.Name}: unknown base chain type '{b.Type}'");
                    if (b.Hook is not ("prerouting" or "input" or "forward" or "output" or "postrouting")) throw new NftException($"chain {chain.Name}: unknown hook '{b.Hook}'");
                }
                break;
            case NftRule rule:
                Nft.ValidateName(rule.Chain, "chain");
                Nft.ValidateText(rule.Text, $"rule in {rule.Chain}");
                if (rule.Text.Length == 0) throw new NftException($"empty rule in {rule.Chain}");
                Nft.ValidateComment(rule.Comment);
                Nft.ValidateReferences(rule.Text);
                break;
            case NftSet set:
                Nft.ValidateName(set.Name, "set");
                Nft.ValidateComment(set.Comment);
                if (verb == NftVerb.Add && set.Type.IsEmpty) throw new NftException($"set {set.Name}: a type is needed to add it");
                foreach (var t in set.Type.Concat(set.Flags)) Nft.ValidateWord(t, $"set {set.Name}");
                if (set.TimeoutSeconds is <= 0) throw new NftException($"set {set.Name}: timeout must be positive");
                break;
            case NftMap map:
                Nft.ValidateName(map.Name, "map");
                Nft.ValidateComment(map.Comment);
                if (verb == NftVerb.Add && (map.Type.IsEmpty || map.ValueType.Length == 0)) throw new NftException($"map {map.Name}: key and value types are needed to add it");
                if ((map.KeyTypeof is null) != (map.ValueTypeof is null)) throw new NftException($"map {map.Name}: typeof needs both a key and a value expression");
                foreach (var t in map.Type.Concat(map.Flags)) Nft.ValidateWord(t, $"map {map.Name}");
                foreach (var t in map.ValueType.Split(" . ", StringSplitOptions.RemoveEmptyEntries)) Nft.ValidateWord(t, $"map {map.Name}");
                foreach (var t in (ReadOnlySpan<string?>)[map.KeyTypeof, map.ValueTypeof])
                    if (t is not null && (t.Length == 0 || t.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is ' ' or '.' or '_'))))
                        throw new NftException($"map {map.Name}: '{t}' is not a typeof expression");
                break;
            case NftElement element:
                Nft.ValidateName(element.Set, "set");
                if (element.Key.IsEmpty) throw new NftException($"element of {element.Set}: empty key");
                foreach (var part in element.Key) Nft.ValidateElementText(part, $"element of {element.Set}");
                Nft.ValidateComment(element.Comment);
                if (element.Comment is not null && element.Comment.IndexOfAny(['{', '}', ',', ';', '#']) >= 0)
                    throw new NftException($"element of {element.Set}: comment '{element.Comment}' contains a character that would end the element list");
                if (element.Value is { } value)
                {
                    if (verb == NftVerb.Delete) throw new NftException($"element of {element.Set}: a deleted element is named by its key only");
                    Nft.ValidateElementText(value, $"element of {element.Set}");
                    Nft.ValidateReferences(value);
                }
                break;
            default:
                throw new NftException($"unknown object {obj.GetType().Name}");
        }
    }

    /// <summary>
    /// The nft script: one command per line; consecutive element additions (or deletions) of the
    /// same set are written as one command, which nft parses and sends much faster.
    /// </summary>
    public override string ToString()
    {
        using var text = new StringWriter(CultureInfo.InvariantCulture);
        WriteTo(text);
        return text.ToString();
    }

    /// <summary>
    /// Writes <see cref="ToString"/>'s text to <paramref name="writer"/> in pieces of about 32 KiB, so a full
    /// table's script (12 MB at 10,000 services) is never one string (see <see cref="WriteToAsync"/>).
    /// </summary>
    public void WriteTo(TextWriter writer)
    {
        var text = new StringBuilder();
        var prefix = $"{FamilyKeyword} {Table}";
        for (var i = 0; i < _operations.Count; i++)
        {
            if (text.Length >= 32 * 1024)
            {
                writer.Write(text);
                text.Clear();
            }
            var (verb, obj) = _operations[i];
            var verbText = verb switch { NftVerb.Add => "add", NftVerb.Flush => "flush", _ => "delete" };
            if (obj is NftElement element)
            {
                var j = i;
                while (j + 1 < _operations.Count && _operations[j + 1].Verb == verb && _operations[j + 1].Object is NftElement next && next.Set == element.Set) j++;
                text.Append(verbText).Append(" element ").Append(prefix).Append(' ').Append(element.Set).Append(" {");
                if (j == i)
                    text.Append(' ').Append(verb == NftVerb.Delete ? element.KeyText : element.ToString()).Append(" }\n");
                else
                {
                    text.Append('\n');
                    for (var k = i; k <= j; k++)
                    {
                        var e = (NftElement)_operations[k].Object;
                        text.Append('\t').Append(verb == NftVerb.Delete ? e.KeyText : e.ToString()).Append(",\n");
                    }
                    text.Append("}\n");
                }
                i = j;
                continue;
            }
            text.Append(verbText).Append(' ').Append(obj.Kind).Append(' ').Append(prefix);
            switch (obj)
            {
                case NftTable table:
                    if (verb == NftVerb.Add && table.Comment is not null) text.Append(" { comment \"").Append(table.Comment).Append("\" ; }");
                    break;
                case NftChain chain:
                    text.Append(' ').Append(chain.Name);
                    if (verb == NftVerb.Add && (chain.Base is not null || chain.Comment is not null))
                    {
                        text.Append(" {");
                        if (chain.Base is { } b) text.Append(' ').Append(b).Append(" ;");
                        if (chain.Comment is { } c) text.Append(" comment \"").Append(c).Append("\" ;");
                        text.Append(" }");
                    }
                    break;
                case NftRule rule:
                    text.Append(' ').Append(rule.Chain).Append(' ').Append(rule.Text);
                    if (rule.Comment is { } rc) text.Append(" comment \"").Append(rc).Append('"');
                    break;
                case NftSet set:
                    text.Append(' ').Append(set.Name);
                    if (verb == NftVerb.Add)
                    {
                        text.Append(" { type ").Append(string.Join(" . ", set.Type)).Append(" ;");
                        if (!set.Flags.IsEmpty) text.Append(" flags ").Append(string.Join(",", set.Flags)).Append(" ;");
                        if (set.TimeoutSeconds is { } t) text.Append(" timeout ").Append(t).Append("s ;");
                        if (set.Comment is { } c) text.Append(" comment \"").Append(c).Append("\" ;");
                        text.Append(" }");
                    }
                    break;
                case NftMap map:
                    text.Append(' ').Append(map.Name);
                    if (verb == NftVerb.Add)
                    {
                        if (map.KeyTypeof is { } keyTypeof) text.Append(" { typeof ").Append(keyTypeof).Append(" : ").Append(map.ValueTypeof).Append(" ;");
                        else text.Append(" { type ").Append(string.Join(" . ", map.Type)).Append(" : ").Append(map.ValueType).Append(" ;");
                        if (!map.Flags.IsEmpty) text.Append(" flags ").Append(string.Join(",", map.Flags)).Append(" ;");
                        if (map.Comment is { } c) text.Append(" comment \"").Append(c).Append("\" ;");
                        text.Append(" }");
                    }
                    break;
            }
            text.Append('\n');
        }
        writer.Write(text);
    }

    /// <summary>
    /// <see cref="WriteTo"/> a tool's standard input (<c>nft -f -</c>) off the caller's thread; a cancelled
    /// token returns at once (the caller then kills the tool, which ends the write).
    /// </summary>
    public Task WriteToAsync(TextWriter writer, CancellationToken cancellationToken) =>
        Task.Run(() => WriteTo(writer), CancellationToken.None).WaitAsync(cancellationToken);
}

/// <summary>nft syntax helpers shared by the model, the planner and the appliers.</summary>
public static class Nft
{
    /// <summary>Longest table, chain, set or map name the kernel takes (NFT_NAME_MAXLEN - 1).</summary>
    public const int NameLengthMax = 255;

    /// <summary>Longest comment nft takes (NFTNL_UDATA_COMMENT_MAXLEN).</summary>
    public const int CommentLengthMax = 128;

    public static string FamilyKeyword(IpFamily family) => family == IpFamily.IPv4 ? "ip" : "ip6";

    /// <summary>Names nft reads as one word: a letter, '_' or '.' first, then letters, digits and <c>_ . / -</c>.</summary>
    public static bool IsValidName(string name)
    {
        if (name.Length is 0 or > NameLengthMax || !(char.IsAsciiLetter(name[0]) || name[0] is '_' or '.')) return false;
        foreach (var c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '/' or '-')) return false;
        return true;
    }

    public static void ValidateName(string name, string what)
    {
        if (!IsValidName(name)) throw new NftException($"invalid {what} name '{name}'");
    }

    private static bool IsValidName(ReadOnlySpan<char> name)
    {
        if (name.Length is 0 or > NameLengthMax || !(char.IsAsciiLetter(name[0]) || name[0] is '_' or '.')) return false;
        foreach (var c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '/' or '-')) return false;
        return true;
    }

    /// <summary>
    /// Checks the names of <see cref="ChainReferences"/> (chains) and <see cref="SetReferences"/> (sets) of rule or
    /// verdict text, in that order, as <see cref="ValidateName"/> of each would, without making them (every rule
    /// and verdict element of a full sync is checked).
    /// </summary>
    internal static void ValidateReferences(string text)
    {
        var chains = text.AsSpan();
        int? firstBad = null;
        foreach (var (start, end) in new ChainWords(text))
            if (!IsValidName(chains[start..end]) && (firstBad is null || start < firstBad)) firstBad = start;
        if (firstBad is { } bad)
        {
            var end = text.IndexOf(' ', bad);
            ValidateName(text[bad..(end < 0 ? text.Length : end)], "chain");
        }
        for (var i = text.IndexOf('@'); i >= 0; i = text.IndexOf('@', i + 1))
        {
            if (i > 0 && text[i - 1] != ' ') continue;
            var end = text.IndexOf(' ', i);
            if (end < 0) end = text.Length;
            if (end > i + 1 && !IsValidName(chains[(i + 1)..end])) ValidateName(text[(i + 1)..end], "set");
        }
    }

    /// <summary>
    /// The word after each "jump " and "goto " that starts a word (all the jumps, then all the gotos), as [start, end)
    /// of the text, without allocating: what <see cref="ValidateReferences"/> checks and <see cref="ChainReferences"/> lists.
    /// </summary>
    private ref struct ChainWords(string text)
    {
        private int _keyword;
        private int _from;

        public (int Start, int End) Current { get; private set; }

        public readonly ChainWords GetEnumerator() => this;

        public bool MoveNext()
        {
            while (_keyword < 2)
            {
                var keyword = _keyword == 0 ? "jump " : "goto ";
                var i = text.IndexOf(keyword, _from, StringComparison.Ordinal);
                if (i < 0)
                {
                    _keyword++;
                    _from = 0;
                    continue;
                }
                _from = i + keyword.Length;
                if (i > 0 && text[i - 1] != ' ') continue;
                var start = _from;
                while (start < text.Length && text[start] == ' ') start++;
                var end = text.IndexOf(' ', start);
                if (end < 0) end = text.Length;
                if (end > start)
                {
                    Current = (start, end);
                    return true;
                }
            }
            return false;
        }
    }

    /// <summary>The words after "jump" and "goto", in order.</summary>
    internal static IReadOnlyList<string> ChainReferences(string text)
    {
        List<(int At, string Name)>? found = null;
        foreach (var (start, end) in new ChainWords(text)) (found ??= []).Add((start, text[start..end]));
        if (found is null) return [];
        found.Sort((a, b) => a.At.CompareTo(b.At));
        return found.ConvertAll(f => f.Name);
    }

    /// <summary>The chain of a verdict written alone (<c>goto X</c>, <c>jump X</c>); otherwise the first of <see cref="ChainReferences"/>.</summary>
    internal static string? ChainReference(string verdict)
    {
        if ((verdict.StartsWith("goto ", StringComparison.Ordinal) || verdict.StartsWith("jump ", StringComparison.Ordinal))
            && verdict.IndexOf(' ', 5) < 0 && verdict.Length > 5 && verdict[5] != ' ')
            return verdict[5..];
        var references = ChainReferences(verdict);
        return references.Count == 0 ? null : references[0];
    }

    /// <summary>The names in "@name" words, in order.</summary>
    internal static IReadOnlyList<string> SetReferences(string text)
    {
        List<string>? found = null;
        for (var i = text.IndexOf('@'); i >= 0; i = text.IndexOf('@', i + 1))
        {
            if (i > 0 && text[i - 1] != ' ') continue;
            var end = text.IndexOf(' ', i);
            if (end < 0) end = text.Length;
            if (end > i + 1) (found ??= []).Add(text[(i + 1)..end]);
        }
        return found ?? (IReadOnlyList<string>)[];
    }

    internal static void ValidateComment(string? comment)
    {
        if (comment is null) return;
        if (Encoding.UTF8.GetByteCount(comment) > CommentLengthMax) throw new NftException($"comment longer than {CommentLengthMax} bytes: '{comment}'");
        if (comment.IndexOfAny(['"', '\n', '\r']) >= 0) throw new NftException($"comment with a quote or line break: '{comment}'");
    }

    /// <summary>Rule text: nothing that ends the command (line break, ';') or starts an nft comment ('#').</summary>
    internal static void ValidateText(string text, string what)
    {
        if (text.AsSpan().IndexOfAny("\n\r;#") >= 0) throw new NftException($"{what}: '{text}' contains a line break, ';' or '#'");
        if (text.AsSpan().Count('"') % 2 != 0) throw new NftException($"{what}: unbalanced quotes in '{text}'");
    }

    private static readonly System.Buffers.SearchValues<char> ElementEnders = System.Buffers.SearchValues.Create("\n\r;#{},\"");

    internal static void ValidateElementText(string text, string what)
    {
        if (text.Length == 0 || text.AsSpan().IndexOfAny(ElementEnders) >= 0)
            throw new NftException($"{what}: '{text}' is empty or contains a character that would end the element list");
    }

    internal static void ValidateWord(string text, string what)
    {
        if (text.Length == 0 || text.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '_' or '-')))
            throw new NftException($"{what}: '{text}' is not a type or flag name");
    }
}
