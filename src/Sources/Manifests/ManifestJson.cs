using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace ProxyPlanes.Sources.Manifests;

internal enum ResolvedKind : byte { String, Null, Bool, Number }

internal readonly record struct ResolvedScalar(ResolvedKind Kind, string? Json = null, bool Bool = false);

/// <summary>
/// YAML scalar → JSON value, like sigs.k8s.io/yaml: plain ints and floats become numbers, true/false
/// booleans, null/~/empty null; quoted and block scalars stay strings.
/// </summary>
internal static class ScalarResolver
{
    public static ResolvedScalar Resolve(MScalar s)
    {
        var v = s.Value;
        switch (s.Tag)
        {
            case ScalarTag.String:
                return new(ResolvedKind.String);
            case ScalarTag.Null:
                return new(ResolvedKind.Null);
            case ScalarTag.Bool:
                return IsTrue(v) ? new(ResolvedKind.Bool, Bool: true)
                    : IsFalse(v) ? new(ResolvedKind.Bool, Bool: false)
                    : new(ResolvedKind.String);
            case ScalarTag.Int or ScalarTag.Float:
                return TryNumber(v, out var n) ? new(ResolvedKind.Number, n) : new(ResolvedKind.String);
        }

        if (v.Length == 0 || v is "~" or "null" or "Null" or "NULL") return new(ResolvedKind.Null);
        if (IsTrue(v)) return new(ResolvedKind.Bool, Bool: true);
        if (IsFalse(v)) return new(ResolvedKind.Bool, Bool: false);
        var c = v[0];
        if ((c is >= '0' and <= '9' or '-' or '+' or '.') && TryNumber(v, out var number))
            return new(ResolvedKind.Number, number);
        return new(ResolvedKind.String);
    }

    private static bool IsTrue(string v) => v is "true" or "True" or "TRUE";
    private static bool IsFalse(string v) => v is "false" or "False" or "FALSE";

    /// <summary>A YAML 1.2 core-schema int or float, as JSON number text.</summary>
    private static bool TryNumber(string v, out string json)
    {
        json = "";
        if (IsJsonNumber(v))
        {
            json = v;
            return true;
        }

        var s = v.AsSpan();
        if (s.StartsWith("0x") && s.Length > 2 && long.TryParse(s[2..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var hex))
        {
            json = hex.ToString(CultureInfo.InvariantCulture);
            return true;
        }

        if (s.StartsWith("0o") && s.Length > 2)
        {
            long octal = 0;
            foreach (var ch in s[2..])
            {
                if (ch is < '0' or > '7' || octal > long.MaxValue / 8) return false;
                octal = (octal * 8) + (ch - '0');
            }

            json = octal.ToString(CultureInfo.InvariantCulture);
            return true;
        }

        // Forms YAML accepts and JSON does not: +1, 007, 1., .5, 1e3 with a sign...
        if (!IsYamlFloat(s)) return false;
        if (!s.Contains('.') && !s.Contains('e') && !s.Contains('E') && long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var integer))
        {
            json = integer.ToString(CultureInfo.InvariantCulture);
            return true;
        }

        if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && double.IsFinite(d))
        {
            json = d.ToString("R", CultureInfo.InvariantCulture);
            return true;
        }

        return false;
    }

    // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
    private static bool IsJsonNumber(string v)
    {
        var i = 0;
        if (i < v.Length && v[i] == '-') i++;
        if (i >= v.Length) return false;
        if (v[i] == '0') i++;
        else if (v[i] is >= '1' and <= '9') while (i < v.Length && char.IsAsciiDigit(v[i])) i++;
        else return false;
        if (i < v.Length && v[i] == '.')
        {
            i++;
            if (i >= v.Length || !char.IsAsciiDigit(v[i])) return false;
            while (i < v.Length && char.IsAsciiDigit(v[i])) i++;
        }

        if (i < v.Length && v[i] is 'e' or 'E')
        {
            i++;
            if (i < v.Length && v[i] is '+' or '-') i++;
            if (i >= v.Length || !char.IsAsciiDigit(v[i])) return false;
            while (i < v.Length && char.IsAsciiDigit(v[i])) i++;
        }

        return i == v.Length;
    }

    // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    private static bool IsYamlFloat(ReadOnlySpan<char> v)
    {
        var i = 0;
        if (i < v.Length && v[i] is '+' or '-') i++;
        var digits = 0;
        while (i < v.Length && char.IsAsciiDigit(v[i])) { i++; digits++; }
        if (i < v.Length && v[i] == '.')
        {
            i++;
            while (i < v.Length && char.IsAsciiDigit(v[i])) { i++; digits++; }
        }

        if (digits == 0) return false;
        if (i < v.Length && v[i] is 'e' or 'E')
        {
            i++;
            if (i < v.Length && v[i] is '+' or '-') i++;
            if (i >= v.Length || !char.IsAsciiDigit(v[i])) return false;
            while (i < v.Length && char.IsAsciiDigit(v[i])) i++;
        }

        return i == v.Length;
    }
}

/// <summary>Writes a tree as JSON, expanding aliases and YAML merge keys.</summary>
internal sealed class ManifestJsonWriter
{
    private const int MaxDepth = 256;
    private const long MaxNodes = 10_000_000;

    private readonly ArrayBufferWriter<byte> _buffer = new(4096);
    private readonly Utf8JsonWriter _writer;
    private readonly string _file;
    private long _budget = MaxNodes;

    public ManifestJsonWriter(string file)
    {
        _file = file;
        _writer = new Utf8JsonWriter(_buffer, new JsonWriterOptions { SkipValidation = true });
    }

    public ReadOnlySpan<byte> Write(MNode node)
    {
        _buffer.ResetWrittenCount();
        _writer.Reset(_buffer);
        WriteNode(node, 0);
        _writer.Flush();
        return _buffer.WrittenSpan;
    }

    private void WriteNode(MNode node, int depth)
    {
        if (--_budget < 0) throw new ManifestException(_file, node.Line, node.Column, "document too large (alias expansion)");
        if (depth > MaxDepth) throw new ManifestException(_file, node.Line, node.Column, "document is nested too deeply");
        switch (node)
        {
            case MScalar s:
                var r = ScalarResolver.Resolve(s);
                switch (r.Kind)
                {
                    case ResolvedKind.Null: _writer.WriteNullValue(); break;
                    case ResolvedKind.Bool: _writer.WriteBooleanValue(r.Bool); break;
                    case ResolvedKind.Number: _writer.WriteRawValue(r.Json!, skipInputValidation: true); break;
                    default: _writer.WriteStringValue(s.Value); break;
                }

                break;
            case MSequence seq:
                _writer.WriteStartArray();
                foreach (var item in seq.Items) WriteNode(item, depth + 1);
                _writer.WriteEndArray();
                break;
            case MMapping map:
                _writer.WriteStartObject();
                foreach (var (key, value) in MappingEntries.Effective(map, _file))
                {
                    _writer.WritePropertyName(key.Value);
                    WriteNode(value, depth + 1);
                }

                _writer.WriteEndObject();
                break;
        }
    }
}

internal static class MappingEntries
{
    /// <summary>A mapping's entries with YAML merge keys (<c>&lt;&lt;: *base</c>) applied: explicit keys win.</summary>
    public static IEnumerable<KeyValuePair<MScalar, MNode>> Effective(MMapping map, string file)
    {
        if (!map.HasMerge) return map.Entries;
        var result = new List<KeyValuePair<MScalar, MNode>>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        Collect(map, file, result, seen, 0);
        return result;
    }

    public static bool TryGet(MMapping map, string key, string file, out MScalar keyNode, out MNode value)
    {
        foreach (var kv in map.HasMerge ? Effective(map, file) : map.Entries)
        {
            if (kv.Key.Value == key)
            {
                (keyNode, value) = (kv.Key, kv.Value);
                return true;
            }
        }

        (keyNode, value) = (null!, null!);
        return false;
    }

    private static void Collect(MMapping map, string file, List<KeyValuePair<MScalar, MNode>> into, HashSet<string> seen, int depth)
    {
        if (depth > 64) throw new ManifestException(file, map.Line, map.Column, "merge keys nested too deeply");
        List<MMapping>? merges = null;
        foreach (var kv in map.Entries)
        {
            if (map.HasMerge && kv.Key.Value == "<<" && kv.Key.Tag == ScalarTag.Auto)
            {
                merges ??= [];
                switch (kv.Value)
                {
                    case MMapping m: merges.Add(m); break;
                    case MSequence seq when seq.Items.All(i => i is MMapping):
                        merges.AddRange(seq.Items.Cast<MMapping>());
                        break;
                    default:
                        throw new ManifestException(file, kv.Key.Line, null, "a merge key (<<) needs a mapping or a list of mappings");
                }

                continue;
            }

            if (seen.Add(kv.Key.Value)) into.Add(kv);
        }

        if (merges is null) return;
        foreach (var m in merges) Collect(m, file, into, seen, depth + 1);
    }
}

/// <summary>A System.Text.Json path (<c>$.spec.ports[0].port</c>, <c>$.metadata.labels['a/b']</c>) as segments.</summary>
internal static class ManifestPath
{
    public static List<object> Parse(string? path)
    {
        var segments = new List<object>();
        if (string.IsNullOrEmpty(path)) return segments;
        var i = path[0] == '$' ? 1 : 0;
        while (i < path.Length)
        {
            if (path[i] == '.')
            {
                var end = i + 1;
                while (end < path.Length && path[end] is not '.' and not '[') end++;
                segments.Add(path[(i + 1)..end]);
                i = end;
            }
            else if (path[i] == '[' && i + 1 < path.Length && path[i + 1] == '\'')
            {
                var end = path.IndexOf("']", i + 2, StringComparison.Ordinal);
                if (end < 0) end = path.Length;
                segments.Add(path[(i + 2)..end]);
                i = Math.Min(end + 2, path.Length);
            }
            else if (path[i] == '[')
            {
                var end = path.IndexOf(']', i);
                if (end < 0) end = path.Length;
                segments.Add(int.TryParse(path.AsSpan(i + 1, end - i - 1), NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : path[(i + 1)..end]);
                i = Math.Min(end + 1, path.Length);
            }
            else
            {
                i++;
            }
        }

        return segments;
    }

    /// <summary><c>spec.ports[0].port</c>, <c>metadata.labels["a/b"]</c>.</summary>
    public static string Format(IEnumerable<object> segments)
    {
        var sb = new StringBuilder();
        foreach (var s in segments)
        {
            if (s is int n) sb.Append(CultureInfo.InvariantCulture, $"[{n}]");
            else if (s is string name && name.Length > 0 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                sb.Append(sb.Length == 0 ? "" : ".").Append(name);
            else sb.Append(CultureInfo.InvariantCulture, $"[\"{s}\"]");
        }

        return sb.ToString();
    }

    /// <summary>
    /// The deepest node of <paramref name="root"/> along <paramref name="segments"/>: the line of a mapping
    /// entry is its key's line. <paramref name="value"/> is the node at the full path, when it exists.
    /// </summary>
    public static int Locate(MNode root, IReadOnlyList<object> segments, string file, out MNode? value)
    {
        var line = root.Line;
        var node = root;
        foreach (var segment in segments)
        {
            switch (node, segment)
            {
                case (MMapping map, string key) when MappingEntries.TryGet(map, key, file, out var keyNode, out var child):
                    line = keyNode.Line;
                    node = child;
                    continue;
                case (MSequence seq, int index) when index >= 0 && index < seq.Items.Count:
                    node = seq.Items[index];
                    line = node.Line;
                    continue;
            }

            value = null;
            return line;
        }

        value = node;
        return line;
    }
}
