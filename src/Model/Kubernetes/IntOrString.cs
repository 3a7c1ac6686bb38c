using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ProxyPlanes.Model;

/// <summary>A Kubernetes IntOrString (a service's targetPort): a number or a port name.</summary>
public readonly record struct IntOrString
{
    private IntOrString(int? number, string? name) => (Number, Name) = (number, name);

    public int? Number { get; }
    public string? Name { get; }

    public static IntOrString FromInt(int value) => new(value, null);
    public static IntOrString FromName(string value) => new(null, value);

    public override string ToString() => Number?.ToString(CultureInfo.InvariantCulture) ?? Name ?? "";
}

public sealed class IntOrStringJsonConverter : JsonConverter<IntOrString>
{
    public override IntOrString Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType switch
        {
            JsonTokenType.Number => IntOrString.FromInt(reader.GetInt32()),
            // Kubernetes accepts "8080" as the number 8080.
            JsonTokenType.String => int.TryParse(reader.GetString(), NumberStyles.None, CultureInfo.InvariantCulture, out var n)
                ? IntOrString.FromInt(n)
                : IntOrString.FromName(reader.GetString()!),
            _ => throw new JsonException("expected a port number or a port name"),
        };

    public override void Write(Utf8JsonWriter writer, IntOrString value, JsonSerializerOptions options)
    {
        if (value.Number is { } n) writer.WriteNumberValue(n);
        else writer.WriteStringValue(value.Name);
    }
}
