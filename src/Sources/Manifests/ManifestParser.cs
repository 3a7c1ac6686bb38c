using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using ProxyPlanes.Model;

namespace ProxyPlanes.Sources.Manifests;

public enum ManifestFormat
{
    /// <summary>JSON for <c>*.json</c> names, YAML otherwise.</summary>
    Auto,
    Yaml,
    Json,
}

/// <summary>
/// Reads Kubernetes manifests (multi-document YAML, JSON, <c>kind: List</c>) into the typed model.
/// YAML is converted to JSON (scalar rules of sigs.k8s.io/yaml) and read with <see cref="KubernetesJsonContext"/>,
/// so manifests and the API's JSON share one model. Reads Service (v1), EndpointSlice (discovery.k8s.io/v1)
/// and Node (v1); other kinds are returned in <see cref="ManifestDocumentSet.Ignored"/>.
/// Errors are <see cref="ManifestException"/>s naming the file and line.
/// </summary>
public static class ManifestParser
{
    public const string DefaultNamespace = "default";

    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    /// <summary>Parses manifest text; <paramref name="fileName"/> is used in error messages and to pick the format.</summary>
    public static ManifestDocumentSet Parse(string content, string fileName = "<input>", ManifestFormat format = ManifestFormat.Auto)
    {
        ArgumentNullException.ThrowIfNull(content);
        ArgumentNullException.ThrowIfNull(fileName);
        if (content.Length > 0 && content[0] == '\uFEFF') content = content[1..];
        var json = format == ManifestFormat.Json
            || (format == ManifestFormat.Auto && fileName.EndsWith(".json", StringComparison.OrdinalIgnoreCase));
        var roots = json ? JsonTreeReader.Read(content, fileName) : YamlTreeReader.Read(content, fileName);
        var reader = new DocumentReader(fileName);
        foreach (var root in roots) reader.Read(root, null, null);
        return new ManifestDocumentSet(reader.Objects, reader.Ignored);
    }

    /// <summary>Parses one file (format from its extension).</summary>
    public static ManifestDocumentSet ParseFile(string path) => Parse(ReadText(path), path);

    /// <summary>Parses a file, or every manifest file under a folder, and combines them (duplicates are errors).</summary>
    public static ManifestDocumentSet Load(string path) =>
        ManifestDocumentSet.Combine(FindManifestFiles(path).Select(ParseFile));

    /// <summary>
    /// <paramref name="path"/> itself if it is a file; for a folder, its <c>*.yaml</c>, <c>*.yml</c> and <c>*.json</c>
    /// files, recursively, in ordinal path order, skipping hidden entries and editor temp files.
    /// </summary>
    public static IReadOnlyList<string> FindManifestFiles(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (File.Exists(path)) return [path];
        if (!Directory.Exists(path)) throw new ManifestException(path, 0, null, "manifest path does not exist");
        var files = new List<string>();
        var visited = new HashSet<string>(StringComparer.Ordinal);
        Walk(path, 0);
        files.Sort(StringComparer.Ordinal);
        return files;

        void Walk(string dir, int depth)
        {
            var info = new DirectoryInfo(dir);
            var real = info.LinkTarget is null ? info.FullName : info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? info.FullName;
            if (depth > 32 || !visited.Add(real)) return;
            IEnumerable<FileSystemInfo> entries;
            try
            {
                entries = info.EnumerateFileSystemInfos("*", new EnumerationOptions { AttributesToSkip = 0, IgnoreInaccessible = true });
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return;
            }

            foreach (var entry in entries)
            {
                if (IsIgnoredName(entry.Name)) continue;
                if (entry is DirectoryInfo || (entry.LinkTarget is not null && Directory.Exists(entry.FullName)))
                    Walk(Path.Combine(dir, entry.Name), depth + 1);
                else if (IsManifestFileName(entry.Name))
                    files.Add(Path.Combine(dir, entry.Name));
            }
        }
    }

    /// <summary>A <c>*.yaml</c>, <c>*.yml</c> or <c>*.json</c> name that is not hidden or an editor temp file.</summary>
    public static bool IsManifestFileName(string fileName)
    {
        var name = Path.GetFileName(fileName);
        if (IsIgnoredName(name)) return false;
        var ext = Path.GetExtension(name);
        return ext.Equals(".yaml", StringComparison.OrdinalIgnoreCase)
            || ext.Equals(".yml", StringComparison.OrdinalIgnoreCase)
            || ext.Equals(".json", StringComparison.OrdinalIgnoreCase);
    }

    // Hidden files and folders (also vim's .x.swp, emacs' .#x, Kubernetes' ..data), backups (x~), emacs' #x#.
    private static bool IsIgnoredName(string name) =>
        name.Length == 0 || name[0] == '.' || name[0] == '#' || name[^1] == '~';

    internal static string ReadText(string path)
    {
        try
        {
            return DecodeText(File.ReadAllBytes(path));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ManifestException(path, 0, null, $"cannot read: {e.Message}", innerException: e);
        }
    }

    internal static string DecodeText(byte[] bytes)
    {
        var span = bytes.AsSpan();
        if (span.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) span = span[3..];
        return Utf8.GetString(span);
    }

    internal static string Subject(string kind, string? ns, string? name) =>
        name is null ? kind
        : IsNamespaced(kind) ? $"{kind} {(string.IsNullOrEmpty(ns) ? DefaultNamespace : ns)}/{name}"
        : $"{kind} {name}";

    private static bool IsNamespaced(string kind) => kind != "Node";

    private static string? ExpectedApiVersion(string kind) => kind switch
    {
        "Service" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "Node" => "v1",
        _ => null,
    };

    private sealed class DocumentReader(string file)
    {
        private readonly ManifestJsonWriter _writer = new(file);

        public List<ManifestObject> Objects { get; } = [];
        public List<IgnoredManifest> Ignored { get; } = [];

        public void Read(MNode root, string? defaultKind, string? defaultApiVersion)
        {
            if (root is not MMapping map)
            {
                if (root is MScalar s && s.IsNull) return;
                throw new ManifestException(file, root.Line, null,
                    $"expected a Kubernetes object (a mapping with apiVersion and kind), found {Describe(root)}");
            }

            var kind = ProbeString(map, "kind", out var kindKey) ?? defaultKind;
            var apiVersion = ProbeString(map, "apiVersion", out var apiKey) ?? defaultApiVersion;
            var metadata = MappingEntries.TryGet(map, "metadata", file, out _, out var m) ? m as MMapping : null;
            var name = metadata is null ? null : ProbeString(metadata, "name", out _);
            var ns = metadata is null ? null : ProbeString(metadata, "namespace", out _);

            if (string.IsNullOrEmpty(kind)) throw new ManifestException(file, map.Line, null, "document has no kind");

            var listOf = kind == "List" ? "" : kind.EndsWith("List", StringComparison.Ordinal) ? kind[..^4] : null;
            if (listOf == "" || (listOf is not null && ExpectedApiVersion(listOf) is not null))
            {
                ReadList(map, listOf is "" ? null : listOf, listOf is "" ? null : apiVersion);
                return;
            }

            var expected = ExpectedApiVersion(kind);
            if (expected is null)
            {
                var known = new[] { "Service", "EndpointSlice", "Node" }
                    .FirstOrDefault(k => k.Equals(kind, StringComparison.OrdinalIgnoreCase));
                if (known is not null)
                    throw new ManifestException(file, kindKey?.Line ?? map.Line, null, $"unknown kind \"{kind}\" (did you mean {known}?)");
                Ignored.Add(new IgnoredManifest(apiVersion, kind, ns, name, file, map.Line));
                return;
            }

            var subject = Subject(kind, ns, name);
            if (apiVersion != expected)
            {
                var got = apiVersion is null ? "apiVersion is missing" : $"apiVersion \"{apiVersion}\" is not supported";
                throw new ManifestException(file, apiKey?.Line ?? map.Line, null, $"{got}; {kind} needs apiVersion {expected}", subject);
            }

            IKubernetesObject obj = kind switch
            {
                "Service" => Deserialize(map, KubernetesJsonContext.Default.Service, subject),
                "EndpointSlice" => Deserialize(map, KubernetesJsonContext.Default.EndpointSlice, subject),
                _ => Deserialize(map, KubernetesJsonContext.Default.Node, subject),
            };

            Objects.Add(Validate(obj, kind, apiVersion, map));
        }

        private void ReadList(MMapping map, string? itemKind, string? itemApiVersion)
        {
            if (!MappingEntries.TryGet(map, "items", file, out var itemsKey, out var items)) return;
            switch (items)
            {
                case MSequence seq:
                    foreach (var item in seq.Items) Read(item, itemKind, itemApiVersion);
                    break;
                case MScalar s when s.IsNull:
                    break;
                default:
                    throw new ManifestException(file, itemsKey.Line, null, $"items: expected a list, got {Describe(items)}");
            }
        }

        private T Deserialize<T>(MMapping map, JsonTypeInfo<T> typeInfo, string subject) where T : class
        {
            var json = _writer.Write(map);
            try
            {
                return JsonSerializer.Deserialize(json, typeInfo)
                    ?? throw new ManifestException(file, map.Line, null, "empty object", subject);
            }
            catch (JsonException e)
            {
                var segments = ManifestPath.Parse(e.Path);
                var line = ManifestPath.Locate(map, segments, file, out var value);
                var path = ManifestPath.Format(segments);
                var expected = ExpectedType(typeInfo, segments);
                string detail;
                if (expected is not null)
                    detail = value is null ? $"expected {expected}" : $"expected {expected}, got {Describe(value)}";
                else
                    detail = TrimJsonMessage(e.Message);
                throw new ManifestException(file, line, null, path.Length == 0 ? detail : $"{path}: {detail}", subject, e);
            }
        }

        private ManifestObject Validate(IKubernetesObject obj, string kind, string apiVersion, MMapping map)
        {
            var meta = obj.Metadata;
            var namespaced = IsNamespaced(kind);
            if (string.IsNullOrEmpty(meta?.Name))
                throw Error(map, ["metadata", "name"], Subject(kind, meta?.Namespace, null), "metadata.name is required");
            if (namespaced && string.IsNullOrEmpty(meta.Namespace)) meta.Namespace = DefaultNamespace;
            if (!namespaced) meta.Namespace = null;
            var subject = Subject(kind, meta.Namespace, meta.Name);

            switch (obj)
            {
                case Service svc:
                    svc.Kind ??= kind;
                    svc.ApiVersion ??= apiVersion;
                    var ports = svc.Spec?.Ports ?? [];
                    for (var i = 0; i < ports.Count; i++)
                    {
                        var p = ports[i];
                        if (p.Port is < 1 or > 65535)
                            throw Error(map, ["spec", "ports", i, "port"], subject, p.Port == 0
                                ? $"spec.ports[{i}].port is required"
                                : $"spec.ports[{i}].port: {p.Port} is not a valid port number (1-65535)");
                        if (p.TargetPort?.Number is < 1 or > 65535)
                            throw Error(map, ["spec", "ports", i, "targetPort"], subject,
                                $"spec.ports[{i}].targetPort: {p.TargetPort?.Number} is not a valid port number (1-65535)");
                    }

                    break;
                case EndpointSlice slice:
                    slice.Kind ??= kind;
                    slice.ApiVersion ??= apiVersion;
                    if (meta.Labels is null || !meta.Labels.TryGetValue(WellKnownLabels.ServiceName, out var service) || string.IsNullOrEmpty(service))
                        throw Error(map, ["metadata", "labels", WellKnownLabels.ServiceName], subject,
                            $"label {WellKnownLabels.ServiceName} is required (the name of the slice's Service)");
                    var slicePorts = slice.Ports ?? [];
                    for (var i = 0; i < slicePorts.Count; i++)
                    {
                        if (slicePorts[i].Port is < 1 or > 65535)
                            throw Error(map, ["ports", i, "port"], subject,
                                $"ports[{i}].port: {slicePorts[i].Port} is not a valid port number (1-65535)");
                    }

                    break;
                case Node node:
                    node.Kind ??= kind;
                    node.ApiVersion ??= apiVersion;
                    break;
            }

            return new ManifestObject(new ManifestObjectKey(kind, meta.Namespace, meta.Name), obj, file, map.Line);
        }

        private ManifestException Error(MMapping map, object[] path, string subject, string detail) =>
            new(file, ManifestPath.Locate(map, path, file, out _), null, detail, subject);

        /// <summary>A top-level string such as kind or metadata.name, for routing and messages (null if absent or not a scalar).</summary>
        private string? ProbeString(MMapping map, string key, out MScalar? keyNode)
        {
            keyNode = null;
            if (!MappingEntries.TryGet(map, key, file, out var k, out var v)) return null;
            keyNode = k;
            return v is MScalar s && !s.IsNull ? s.Value : null;
        }
    }

    private static string? ExpectedType(JsonTypeInfo root, List<object> segments)
    {
        var type = root.Type;
        foreach (var segment in segments)
        {
            var info = KubernetesJsonContext.Default.GetTypeInfo(Nullable.GetUnderlyingType(type) ?? type);
            if (info is null) return null;
            switch (info.Kind)
            {
                case JsonTypeInfoKind.Object when segment is string name:
                    var property = info.Properties.FirstOrDefault(p => p.Name == name);
                    if (property is null) return null;
                    type = property.PropertyType;
                    break;
                case JsonTypeInfoKind.Enumerable or JsonTypeInfoKind.Dictionary when info.ElementType is not null:
                    type = info.ElementType;
                    break;
                default:
                    return null;
            }
        }

        type = Nullable.GetUnderlyingType(type) ?? type;
        if (type == typeof(int) || type == typeof(long)) return "an integer";
        if (type == typeof(bool)) return "true or false";
        if (type == typeof(string)) return "a string (quote it)";
        if (type == typeof(IntOrString)) return "a port number or a port name";
        return KubernetesJsonContext.Default.GetTypeInfo(type)?.Kind switch
        {
            JsonTypeInfoKind.Dictionary => "a mapping of strings",
            JsonTypeInfoKind.Enumerable => "a list",
            JsonTypeInfoKind.Object => "a mapping",
            _ => null,
        };
    }

    private static string Describe(MNode node)
    {
        switch (node)
        {
            case MMapping: return "a mapping";
            case MSequence: return "a list";
            case MScalar s:
                var r = ScalarResolver.Resolve(s);
                if (r.Kind == ResolvedKind.Null) return "null";
                if (r.Kind != ResolvedKind.String) return s.Value;
                var v = s.Value.Length > 40 ? s.Value[..40] + "..." : s.Value;
                return "\"" + v.Replace("\n", "\\n", StringComparison.Ordinal) + "\"";
            default: return "?";
        }
    }

    private static string TrimJsonMessage(string message)
    {
        var cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        if (cut < 0) cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return (cut > 0 ? message[..cut] : message).Trim();
    }
}
