using System.Text;
using System.Text.Json;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>A chain as <c>nft -j list table</c> shows it; a base chain has a type, a hook, a priority and a policy.</summary>
public sealed record ListedChain(string Name, string? Type, string? Hook, int Priority, string Policy, IReadOnlyList<ListedRule> Rules)
{
    public bool IsBase => Hook is not null;
}

/// <summary>A rule: its expressions (matches and statements, in order) as nft's JSON gives them.</summary>
public sealed record ListedRule(string Chain, IReadOnlyList<JsonElement> Expressions)
{
    /// <summary>The rule as nft would print it (near enough for people).</summary>
    public string Text { get; } = NftJsonText.Rule(Expressions);
}

/// <summary>An element of a set or map: its key (a value, a prefix, a range, or a concatenation), a map's value, its comment.</summary>
public sealed record ListedElement(JsonElement Key, JsonElement? Value, string? Comment)
{
    public string Text => NftJsonText.Expression(Key) + (Comment is null ? "" : $" comment \"{Comment}\"") + (Value is { } v ? $" : {NftJsonText.Statement(v)}" : "");
}

/// <summary>A set or a map (<see cref="ValueType"/> set), with its elements.</summary>
public sealed record ListedSet(string Name, IReadOnlyList<string> Type, string? ValueType, IReadOnlyList<string> Flags, IReadOnlyList<ListedElement> Elements)
{
    public bool IsMap => ValueType is not null;

    /// <summary>Filled by the kernel and forgotten after a timeout: an affinity set.</summary>
    public bool IsDynamic => Flags.Contains("dynamic") || Flags.Contains("timeout");
}

/// <summary>
/// One table as <c>nft -j list table FAMILY NAME</c> prints it: chains with their rules, sets and
/// maps with their elements. What <see cref="NftablesTracer"/> reads: the kernel's own account of
/// the table, never the planner's.
/// </summary>
public sealed record NftListing(IpFamily Family, string Table, bool Exists, IReadOnlyDictionary<string, ListedChain> Chains, IReadOnlyDictionary<string, ListedSet> Sets)
{
    /// <summary>Reads the JSON; an <see cref="ExplainException"/> when it is not nft's JSON.</summary>
    public static NftListing Parse(string json, IpFamily family, string table = NftNames.Table)
    {
        var familyName = Nft.FamilyKeyword(family);
        var exists = false;
        var chains = new Dictionary<string, (JsonElement Chain, List<ListedRule> Rules)>(StringComparer.Ordinal);
        var sets = new Dictionary<string, ListedSet>(StringComparer.Ordinal);
        var rules = new List<ListedRule>();
        try
        {
            var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(json), new JsonReaderOptions { AllowMultipleValues = true });
            while (reader.Read())
            {
                using var document = JsonDocument.ParseValue(ref reader);
                if (!document.RootElement.TryGetProperty("nftables", out var items) || items.ValueKind != JsonValueKind.Array)
                    throw new ExplainException("nft -j: no \"nftables\" array in its output");
                foreach (var item in items.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.Object) continue;
                    foreach (var property in item.EnumerateObject())
                    {
                        var o = property.Value.Clone();
                        if (o.ValueKind != JsonValueKind.Object || String(o, "family") != familyName) continue;
                        if (property.Name == "table")
                        {
                            exists |= String(o, "name") == table;
                            continue;
                        }
                        if (String(o, "table") != table) continue;
                        switch (property.Name)
                        {
                            case "chain" when String(o, "name") is { } name:
                                chains[name] = (o, []);
                                break;
                            case "rule" when String(o, "chain") is { } chain:
                                var expressions = o.TryGetProperty("expr", out var expr) && expr.ValueKind == JsonValueKind.Array ? expr.EnumerateArray().ToList() : [];
                                rules.Add(new ListedRule(chain, expressions));
                                break;
                            case "set" or "map" when String(o, "name") is { } name:
                                sets[name] = ReadSet(name, o, property.Name == "map");
                                break;
                        }
                    }
                }
            }
        }
        catch (JsonException e)
        {
            throw new ExplainException($"nft -j: output is not JSON: {e.Message}");
        }
        foreach (var rule in rules)
            if (chains.TryGetValue(rule.Chain, out var chain)) chain.Rules.Add(rule);
        var listed = chains.ToDictionary(c => c.Key, c =>
        {
            var o = c.Value.Chain;
            var priority = o.TryGetProperty("prio", out var prio) && prio.ValueKind == JsonValueKind.Number ? prio.GetInt32() : 0;
            return new ListedChain(c.Key, String(o, "type"), String(o, "hook"), priority, String(o, "policy") ?? "accept", c.Value.Rules);
        }, StringComparer.Ordinal);
        return new NftListing(family, table, exists || listed.Count > 0, listed, sets);
    }

    private static ListedSet ReadSet(string name, JsonElement o, bool isMap)
    {
        var elements = new List<ListedElement>();
        if (o.TryGetProperty("elem", out var elem) && elem.ValueKind == JsonValueKind.Array)
            foreach (var e in elem.EnumerateArray())
            {
                // A map element is [key, value]; a key with a comment or timeout is {"elem": {"val": key, "comment": ...}}.
                var (key, value) = isMap && e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2 ? (e[0], (JsonElement?)e[1]) : (e, null);
                string? comment = null;
                if (key.ValueKind == JsonValueKind.Object && key.TryGetProperty("elem", out var wrapped) && wrapped.ValueKind == JsonValueKind.Object)
                {
                    comment = String(wrapped, "comment");
                    if (wrapped.TryGetProperty("val", out var val)) key = val;
                }
                elements.Add(new ListedElement(key, value, comment));
            }
        return new ListedSet(name, Strings(o, "type"), isMap ? String(o, "map") ?? "" : null, Strings(o, "flags"), elements);
    }

    private static string? String(JsonElement o, string property) =>
        o.TryGetProperty(property, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static IReadOnlyList<string> Strings(JsonElement o, string property)
    {
        if (!o.TryGetProperty(property, out var value)) return [];
        return value.ValueKind switch
        {
            JsonValueKind.String => [value.GetString()!],
            JsonValueKind.Array => value.EnumerateArray().Where(v => v.ValueKind == JsonValueKind.String).Select(v => v.GetString()!).ToList(),
            _ => [],
        };
    }
}

/// <summary>nft's JSON expressions written back as nft syntax, for the steps <c>explain</c> shows.</summary>
public static class NftJsonText
{
    public static string Rule(IReadOnlyList<JsonElement> expressions) => string.Join(" ", expressions.Select(Statement));

    /// <summary>A statement or match of a rule, or a verdict of a map element.</summary>
    public static string Statement(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) return Expression(e);
        foreach (var p in e.EnumerateObject())
        {
            var v = p.Value;
            switch (p.Name)
            {
                case "match":
                    var op = v.TryGetProperty("op", out var o) ? o.GetString() : "==";
                    var left = Expression(v.GetProperty("left"));
                    var right = Expression(v.GetProperty("right"));
                    // As nft prints it: "ip daddr 10.96.0.10", "ct state new", but "meta mark & 0x4000 == 0".
                    var binary = v.GetProperty("left").ValueKind == JsonValueKind.Object && v.GetProperty("left").EnumerateObject().Any(l => l.Name is "&" or "|" or "^");
                    return op is "in" || (op == "==" && !binary) ? $"{left} {right}" : $"{left} {op} {right}";
                case "jump" or "goto":
                    return $"{p.Name} {v.GetProperty("target").GetString()}";
                case "accept" or "drop" or "return" or "continue" or "counter" or "log":
                    return p.Name;
                case "reject":
                    return "reject";
                case "vmap":
                    return $"{Expression(v.GetProperty("key"))} vmap {Expression(v.GetProperty("data"))}";
                case "dnat" or "snat":
                    var addr = v.TryGetProperty("addr", out var a) ? Expression(a) : "";
                    if (v.TryGetProperty("port", out var port))
                        addr = (addr.Contains(':') ? $"[{addr}]" : addr) + $":{Expression(port)}";
                    var family = v.TryGetProperty("family", out var f) && f.ValueKind == JsonValueKind.String ? $" {f.GetString()}" : "";
                    return $"{p.Name}{family} to {addr}";
                case "concat" or "range" or "prefix":
                    return Expression(e); // a map element's value, e.g. endpoint-slots' "10.244.1.2 . 8080"
                case "masquerade":
                    return v.ValueKind == JsonValueKind.Object && v.TryGetProperty("flags", out var flags) ? $"masquerade {Expression(flags)}" : "masquerade";
                case "mangle":
                    return $"{Expression(v.GetProperty("key"))} set {Expression(v.GetProperty("value"))}";
                case "set":
                    return $"{(v.TryGetProperty("op", out var sop) ? sop.GetString() : "add")} {Expression(v.GetProperty("set"))} {{ {Expression(v.GetProperty("elem"))} }}";
                default:
                    return $"{p.Name} {(v.ValueKind == JsonValueKind.Null ? "" : v.GetRawText())}".TrimEnd();
            }
        }
        return "{}";
    }

    /// <summary>An expression: payload, meta, fib, ct, numgen, a concatenation, a literal, a prefix, a set.</summary>
    public static string Expression(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                return e.GetString()!;
            case JsonValueKind.Number:
                return e.GetRawText();
            case JsonValueKind.Array:
                return string.Join(",", e.EnumerateArray().Select(Expression));
            case JsonValueKind.Object:
                break;
            default:
                return e.GetRawText();
        }
        foreach (var p in e.EnumerateObject())
        {
            var v = p.Value;
            switch (p.Name)
            {
                case "payload":
                    return $"{Text(v, "protocol")} {Text(v, "field")}";
                case "meta":
                    var key = Text(v, "key");
                    return key is "iifname" or "oifname" ? key : $"meta {key}";
                case "ct":
                    return $"ct {Text(v, "key")}";
                case "fib":
                    return $"fib {Expression(v.GetProperty("flags")).Replace(",", " . ", StringComparison.Ordinal)} {Text(v, "result")}";
                case "numgen":
                    var offset = v.TryGetProperty("offset", out var off) && off.ValueKind == JsonValueKind.Number && off.GetInt64() != 0 ? $" offset {Unsigned32(off.GetInt64())}" : "";
                    return $"numgen {Text(v, "mode")} mod {Text(v, "mod")}{offset}";
                case "concat":
                    return string.Join(" . ", v.EnumerateArray().Select(Expression));
                case "prefix":
                    return $"{Text(v, "addr")}/{Text(v, "len")}";
                case "range":
                    return $"{Expression(v[0])}-{Expression(v[1])}";
                case "set":
                    var items = v.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.Array ? $"{Expression(x[0])} : {Statement(x[1])}" : Expression(x));
                    return "{ " + string.Join(", ", items) + " }";
                case "elem":
                    return v.TryGetProperty("val", out var val) ? Expression(val) : v.GetRawText();
                case "map":
                    return $"{Expression(v.GetProperty("key"))} map {Expression(v.GetProperty("data"))}";
                case "&" or "|" or "^":
                    return $"{Expression(v[0])} {p.Name} {Hex(v[1])}";
                default:
                    return $"{p.Name} {v.GetRawText()}";
            }
        }
        return "{}";
    }

    /// <summary>A 32-bit value nft -j wrote signed (a numgen offset of 2^31 or more comes out negative), as the kernel holds it.</summary>
    public static long Unsigned32(long value) => value < 0 && value >= int.MinValue ? value + (1L << 32) : value;

    private static string Text(JsonElement o, string property) =>
        o.TryGetProperty(property, out var value) ? Expression(value) : "?";

    private static string Hex(JsonElement e) => e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out var n) ? $"0x{n:x}" : Expression(e);
}
