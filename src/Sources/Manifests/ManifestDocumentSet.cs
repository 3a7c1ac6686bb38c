using ProxyPlanes.Model;

namespace ProxyPlanes.Sources.Manifests;

/// <summary>Identity of a manifest object: kind, namespace (null for cluster-scoped kinds) and name.</summary>
public readonly record struct ManifestObjectKey(string Kind, string? Namespace, string Name)
{
    /// <summary><c>Service default/web</c>, or <c>Node node-a</c>.</summary>
    public override string ToString() => Namespace is null ? $"{Kind} {Name}" : $"{Kind} {Namespace}/{Name}";
}

/// <summary>An object read from a manifest, with where it was defined.</summary>
public sealed record ManifestObject(ManifestObjectKey Key, IKubernetesObject Object, string File, int Line)
{
    public string Location => $"{File}:{Line}";
}

/// <summary>A document of a kind the proxy does not read (Deployment, ConfigMap, ...), skipped.</summary>
public sealed record IgnoredManifest(string? ApiVersion, string Kind, string? Namespace, string? Name, string File, int Line)
{
    public override string ToString() =>
        $"{File}:{Line}: {Kind} {(Namespace is null ? "" : Namespace + "/")}{Name ?? "?"}";
}

/// <summary>
/// The objects read from one or more manifests, in document order (files in path order).
/// Construction rejects duplicates (same kind, namespace and name).
/// </summary>
public sealed class ManifestDocumentSet
{
    public static readonly ManifestDocumentSet Empty = new([], []);

    public ManifestDocumentSet(IEnumerable<ManifestObject> objects, IEnumerable<IgnoredManifest>? ignored = null)
    {
        var list = objects.ToList();
        var seen = new Dictionary<ManifestObjectKey, ManifestObject>(list.Count);
        var services = new List<Service>();
        var slices = new List<EndpointSlice>();
        var nodes = new List<Node>();
        foreach (var o in list)
        {
            if (seen.TryGetValue(o.Key, out var first)) throw Duplicate(o, first);
            seen.Add(o.Key, o);
            switch (o.Object)
            {
                case Service s: services.Add(s); break;
                case EndpointSlice e: slices.Add(e); break;
                case Node n: nodes.Add(n); break;
                default: throw new ArgumentException($"unsupported object type {o.Object.GetType().Name}", nameof(objects));
            }
        }

        Objects = list;
        Services = services;
        EndpointSlices = slices;
        Nodes = nodes;
        Ignored = ignored?.ToList() ?? [];
        _byKey = seen;
    }

    private readonly Dictionary<ManifestObjectKey, ManifestObject> _byKey;

    /// <summary>Every object read, in document order.</summary>
    public IReadOnlyList<ManifestObject> Objects { get; }

    public IReadOnlyList<Service> Services { get; }
    public IReadOnlyList<EndpointSlice> EndpointSlices { get; }
    public IReadOnlyList<Node> Nodes { get; }

    /// <summary>Documents of other kinds, skipped (a caller may log them at debug level).</summary>
    public IReadOnlyList<IgnoredManifest> Ignored { get; }

    public int Count => Objects.Count;

    public bool TryGet(ManifestObjectKey key, out ManifestObject obj) => _byKey.TryGetValue(key, out obj!);

    /// <summary>Merges sets (for example one per file), in order; a duplicate object is an error naming both places.</summary>
    public static ManifestDocumentSet Combine(IEnumerable<ManifestDocumentSet> sets)
    {
        var all = sets.ToList();
        return all.Count == 1 ? all[0] : new ManifestDocumentSet(all.SelectMany(s => s.Objects), all.SelectMany(s => s.Ignored));
    }

    internal static ManifestException Duplicate(ManifestObject second, ManifestObject first) =>
        new(second.File, second.Line, null, $"duplicate object; first defined at {first.Location}", second.Key.ToString());
}
