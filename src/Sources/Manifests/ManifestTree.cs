using System.Globalization;
using System.Text;
using System.Text.Json;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace ProxyPlanes.Sources.Manifests;

// A small positioned document tree, built from YAML (YamlDotNet's parser events) or JSON (Utf8JsonReader),
// so that both formats go through the same JSON conversion, probing and error location.

internal enum ScalarTag : byte
{
    /// <summary>Plain YAML scalar or JSON number/true/false/null: resolved by YAML core-schema rules.</summary>
    Auto,
    /// <summary>Quoted, literal/folded, or tagged !!str / !.</summary>
    String,
    Int,
    Float,
    Bool,
    Null,
}

internal abstract class MNode(int line, int column)
{
    public int Line { get; } = line;
    public int Column { get; } = column;
}

internal sealed class MScalar(int line, int column, string value, ScalarTag tag) : MNode(line, column)
{
    public string Value { get; } = value;
    public ScalarTag Tag { get; } = tag;

    public bool IsNull => ScalarResolver.Resolve(this).Kind == ResolvedKind.Null;
}

internal sealed class MMapping(int line, int column) : MNode(line, column)
{
    public List<KeyValuePair<MScalar, MNode>> Entries { get; } = [];

    /// <summary>Has a YAML merge key (<c>&lt;&lt;</c>).</summary>
    public bool HasMerge { get; set; }
}

internal sealed class MSequence(int line, int column) : MNode(line, column)
{
    public List<MNode> Items { get; } = [];
}

internal static class YamlTreeReader
{
    private const int MaxDepth = 256;

    /// <summary>The non-empty documents of a YAML stream.</summary>
    public static List<MNode> Read(string text, string file)
    {
        var scanner = new Scanner(new StringReader(text), skipComments: true);
        var parser = new Parser(scanner);
        var documents = new List<MNode>();
        var anchors = new Dictionary<string, MNode>(StringComparer.Ordinal);
        var stack = new List<Frame>();
        MNode? root = null;
        try
        {
            while (parser.MoveNext())
            {
                switch (parser.Current)
                {
                    case DocumentStart:
                        root = null;
                        anchors.Clear();
                        break;
                    case DocumentEnd:
                        if (root is not null && !(root is MScalar s && s.IsNull)) documents.Add(root);
                        root = null;
                        break;
                    case Scalar e:
                        Complete(new MScalar((int)e.Start.Line, (int)e.Start.Column, e.Value, TagOf(e)), e.Anchor);
                        break;
                    case AnchorAlias e:
                        if (!anchors.TryGetValue(e.Value.Value, out var target))
                            throw new ManifestException(file, (int)e.Start.Line, (int)e.Start.Column, $"unknown alias *{e.Value.Value}");
                        Complete(target, AnchorName.Empty);
                        break;
                    case MappingStart e:
                        Push(new MMapping((int)e.Start.Line, (int)e.Start.Column), e.Anchor, e.Style == MappingStyle.Flow, e.Start);
                        break;
                    case SequenceStart e:
                        Push(new MSequence((int)e.Start.Line, (int)e.Start.Column), e.Anchor, e.Style == SequenceStyle.Flow, e.Start);
                        break;
                    case MappingEnd or SequenceEnd:
                        var frame = stack[^1];
                        stack.RemoveAt(stack.Count - 1);
                        Complete(frame.Node, frame.Anchor);
                        break;
                }
            }
        }
        catch (YamlException e)
        {
            throw new ManifestException(file, (int)e.Start.Line, (int)e.Start.Column, Sentence(e.Message), innerException: e);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or IndexOutOfRangeException)
        {
            // YamlDotNet's scanner throws these on some malformed input (an unclosed '[' or '{').
            var open = stack.LastOrDefault(f => f.Flow);
            if (open.Node is not null)
            {
                var bracket = open.Node is MMapping ? "'{'" : "'['";
                throw new ManifestException(file, open.Node.Line, open.Node.Column, $"{bracket} is not closed", innerException: e);
            }

            var at = scanner.CurrentPosition;
            throw new ManifestException(file, (int)at.Line, (int)at.Column, "invalid YAML", innerException: e);
        }

        return documents;

        void Push(MNode node, AnchorName anchor, bool flow, Mark start)
        {
            if (stack.Count >= MaxDepth)
                throw new ManifestException(file, (int)start.Line, (int)start.Column, "document is nested too deeply");
            stack.Add(new Frame(node, anchor, flow));
        }

        void Complete(MNode node, AnchorName anchor)
        {
            if (!anchor.IsEmpty) anchors[anchor.Value] = node;
            if (stack.Count == 0)
            {
                root = node;
                return;
            }

            var frame = stack[^1];
            switch (frame.Node)
            {
                case MSequence seq:
                    seq.Items.Add(node);
                    break;
                case MMapping map when frame.PendingKey is null:
                    if (node is not MScalar key)
                        throw new ManifestException(file, node.Line, node.Column, "mapping keys must be plain values, not lists or mappings");
                    frame.Keys ??= new HashSet<string>(StringComparer.Ordinal);
                    if (!frame.Keys.Add(key.Value))
                    {
                        var firstLine = map.Entries.First(kv => kv.Key.Value == key.Value).Key.Line;
                        throw new ManifestException(file, key.Line, key.Column,
                            string.Create(CultureInfo.InvariantCulture, $"duplicate key \"{key.Value}\" (first at line {firstLine})"));
                    }

                    if (key.Value == "<<" && key.Tag == ScalarTag.Auto) map.HasMerge = true;
                    frame.PendingKey = key;
                    stack[^1] = frame;
                    break;
                case MMapping map:
                    map.Entries.Add(new(frame.PendingKey!, node));
                    frame.PendingKey = null;
                    stack[^1] = frame;
                    break;
            }
        }
    }

    private static ScalarTag TagOf(Scalar e)
    {
        if (e.Style is not ScalarStyle.Plain and not ScalarStyle.Any) return ScalarTag.String;
        if (e.Tag.IsEmpty) return ScalarTag.Auto;
        if (e.Tag.IsNonSpecific) return ScalarTag.String;
        return e.Tag.Value switch
        {
            "tag:yaml.org,2002:str" or "tag:yaml.org,2002:binary" or "tag:yaml.org,2002:timestamp" => ScalarTag.String,
            "tag:yaml.org,2002:int" => ScalarTag.Int,
            "tag:yaml.org,2002:float" => ScalarTag.Float,
            "tag:yaml.org,2002:bool" => ScalarTag.Bool,
            "tag:yaml.org,2002:null" => ScalarTag.Null,
            _ => ScalarTag.Auto,
        };
    }

    private static string Sentence(string message)
    {
        var m = message.Trim().TrimEnd('.');
        return m.Length > 1 && char.IsUpper(m[0]) && !char.IsUpper(m[1]) ? char.ToLowerInvariant(m[0]) + m[1..] : m;
    }

    private record struct Frame(MNode Node, AnchorName Anchor, bool Flow)
    {
        public MScalar? PendingKey;
        public HashSet<string>? Keys;
    }
}

internal static class JsonTreeReader
{
    /// <summary>The top-level values of a JSON text (one, or several concatenated).</summary>
    public static List<MNode> Read(string text, string file)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var lines = new LineMap(bytes);
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions
        {
            AllowMultipleValues = true,
            CommentHandling = JsonCommentHandling.Skip,
            MaxDepth = 256,
        });
        var documents = new List<MNode>();
        var stack = new List<(MNode Node, MScalar? Key, HashSet<string>? Keys)>();
        try
        {
            while (reader.Read())
            {
                var (line, col) = lines.Position(reader.TokenStartIndex);
                switch (reader.TokenType)
                {
                    case JsonTokenType.StartObject:
                        stack.Add((new MMapping(line, col), null, null));
                        break;
                    case JsonTokenType.StartArray:
                        stack.Add((new MSequence(line, col), null, null));
                        break;
                    case JsonTokenType.EndObject or JsonTokenType.EndArray:
                        var done = stack[^1].Node;
                        stack.RemoveAt(stack.Count - 1);
                        Add(done);
                        break;
                    case JsonTokenType.PropertyName:
                        var name = reader.GetString()!;
                        var top = stack[^1];
                        top.Keys ??= new HashSet<string>(StringComparer.Ordinal);
                        if (!top.Keys.Add(name))
                            throw new ManifestException(file, line, col, $"duplicate key \"{name}\"");
                        top.Key = new MScalar(line, col, name, ScalarTag.String);
                        stack[^1] = top;
                        break;
                    case JsonTokenType.String:
                        Add(new MScalar(line, col, reader.GetString()!, ScalarTag.String));
                        break;
                    case JsonTokenType.Number:
                        Add(new MScalar(line, col, Encoding.UTF8.GetString(reader.ValueSpan), ScalarTag.Auto));
                        break;
                    case JsonTokenType.True:
                        Add(new MScalar(line, col, "true", ScalarTag.Bool));
                        break;
                    case JsonTokenType.False:
                        Add(new MScalar(line, col, "false", ScalarTag.Bool));
                        break;
                    case JsonTokenType.Null:
                        Add(new MScalar(line, col, "null", ScalarTag.Null));
                        break;
                }
            }
        }
        catch (JsonException e)
        {
            var message = e.Message;
            var cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
            if (cut > 0) message = message[..cut];
            var lineNo = (int)(e.LineNumber ?? 0) + 1;
            var column = (int)(e.BytePositionInLine ?? 0) + 1;
            throw new ManifestException(file, lineNo, column, message.Trim(), innerException: e);
        }

        return documents;

        void Add(MNode node)
        {
            if (stack.Count == 0)
            {
                if (!(node is MScalar s && s.IsNull)) documents.Add(node);
                return;
            }

            var top = stack[^1];
            if (top.Node is MSequence seq)
            {
                seq.Items.Add(node);
            }
            else
            {
                ((MMapping)top.Node).Entries.Add(new(top.Key!, node));
                top.Key = null;
                stack[^1] = top;
            }
        }
    }

    private sealed class LineMap
    {
        private readonly byte[] _bytes;
        private readonly List<int> _starts = [0];

        public LineMap(byte[] bytes)
        {
            _bytes = bytes;
            for (var i = 0; i < bytes.Length; i++)
                if (bytes[i] == (byte)'\n') _starts.Add(i + 1);
        }

        public (int Line, int Column) Position(long offset)
        {
            var o = (int)Math.Min(offset, _bytes.Length);
            var index = _starts.BinarySearch(o);
            if (index < 0) index = ~index - 1;
            var lineStart = _starts[index];
            return (index + 1, Encoding.UTF8.GetCharCount(_bytes, lineStart, o - lineStart) + 1);
        }
    }
}
