using System.Text.Json;
using System.Text.Json.Serialization;

namespace ProxyPlanes.Model;

/// <summary>
/// Reads <c>metadata.annotations</c> keeping only the annotations the proxy reads (<see cref="Kept"/>); the others are
/// skipped, not stored. A node caches every Service and EndpointSlice for its life, and an object applied with kubectl
/// carries its whole last-applied configuration as an annotation (often kilobytes: at 50,000 services, 100 MB or
/// more; issue 13). An object with none of the kept annotations has none (null). Writes a dictionary as it is.
/// </summary>
public sealed class KeptAnnotationsConverter : JsonConverter<Dictionary<string, string>>
{
    /// <summary>The annotations some part of the proxy reads.</summary>
    public static readonly IReadOnlySet<string> Kept = new HashSet<string>(StringComparer.Ordinal) { WellKnownLabels.LastChangeTriggerTime };

    public override Dictionary<string, string>? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw new JsonException($"annotations must be an object, not {reader.TokenType}");
        Dictionary<string, string>? kept = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            var key = reader.GetString()!;
            reader.Read();
            if (reader.TokenType is not (JsonTokenType.String or JsonTokenType.Null))
                throw new JsonException($"annotation '{key}' must be a string, not {reader.TokenType}");
            if (reader.TokenType == JsonTokenType.String && Kept.Contains(key)) (kept ??= new(1, StringComparer.Ordinal))[key] = reader.GetString()!;
        }
        return kept;
    }

    public override void Write(Utf8JsonWriter writer, Dictionary<string, string> value, JsonSerializerOptions options)
    {
        writer.WriteStartObject();
        foreach (var (key, text) in value) writer.WriteString(key, text);
        writer.WriteEndObject();
    }
}
