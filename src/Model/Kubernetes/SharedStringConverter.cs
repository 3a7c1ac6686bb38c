using System.Text.Json;
using System.Text.Json.Serialization;

namespace ProxyPlanes.Model;

/// <summary>
/// Reads a JSON string through a small table shared by every read, so a value that thousands of objects repeat
/// (a node name or zone on each endpoint, a namespace, "TCP", "IPv4", "http") is one string in the process instead of one
/// per object (issue 13: at 50,000 services × 5 endpoints a node's cache would otherwise hold ~250,000 copies of
/// each endpoint's node name and zone). The table is lossy and bounded: a slot holds the last value that hashed to
/// it, so values that do not repeat (addresses, names) cost one table write and are never kept alive by it.
/// Used only on fields whose values repeat; it reads exactly what the default string converter reads.
/// </summary>
public sealed class SharedStringConverter : JsonConverter<string>
{
    private const int Slots = 4096; // a power of two
    private const int MaxLength = 64; // longer values are read as usual (not worth comparing)
    private static readonly Entry?[] Table = new Entry?[Slots];

    private sealed class Entry(byte[] utf8, string value)
    {
        public byte[] Utf8 { get; } = utf8;
        public string Value { get; } = value;
    }

    public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.String || reader.HasValueSequence || reader.ValueIsEscaped || reader.ValueSpan.Length > MaxLength)
            return reader.GetString();
        var bytes = reader.ValueSpan;
        var hash = new HashCode();
        hash.AddBytes(bytes);
        var slot = hash.ToHashCode() & (Slots - 1);
        // Entries are immutable and a slot is one reference, so racing readers see an old or a new entry, both valid.
        var entry = Volatile.Read(ref Table[slot]);
        if (entry is not null && bytes.SequenceEqual(entry.Utf8)) return entry.Value;
        var value = reader.GetString()!;
        Volatile.Write(ref Table[slot], new Entry(bytes.ToArray(), value));
        return value;
    }

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);
}
