namespace ProxyPlanes.Kernel.Tests.Conformance;

/// <summary>
/// One conformance scenario: manifests, then steps of probes. Every data plane must pass every
/// scenario unchanged; the topology is always the same (see <see cref="ConformanceTopology"/>).
/// </summary>
public sealed record Scenario(string Name, string Manifests, IReadOnlyList<Step> Steps, IReadOnlyList<string>? ExtraArgs = null)
{

    public override string ToString() => Name;
}

/// <summary>
/// Optionally replace the manifests (and wait for the change to be synced), then probe; then check
/// that each of <see cref="Metrics"/> has reached its minimum in the proxy's /metrics (what the step
/// did must show there, in every mode).
/// </summary>
public sealed record Step(IReadOnlyList<Probe> Probes, string? NewManifests = null, IReadOnlyList<MetricAtLeast>? Metrics = null);

/// <summary>
/// A sample of the proxy's /metrics (name plus exact label text) that must be at least <see cref="Minimum"/>,
/// in every mode or only in <see cref="Modes"/>.
/// </summary>
public sealed record MetricAtLeast(string Name, string? Labels, double Minimum, IReadOnlyList<string>? Modes = null)
{
    public override string ToString() => $"{Name}{(Labels is null ? "" : "{" + Labels + "}")} >= {Minimum}";
}

public enum Transport { Tcp, Udp }

/// <summary>From a namespace of the topology to an address:port; what must happen.</summary>
public sealed record Probe(string From, string To, int Port, Expect Expect, Transport Transport = Transport.Tcp, int? SourcePort = null)
{
    public override string ToString() => $"{From} → {To}:{Port}/{Transport.ToString().ToLowerInvariant()}{(SourcePort is { } p ? $" from port {p}" : "")} expects {Expect}";
}

public enum ExpectKind
{
    /// <summary>Every answer comes from one of the pods, and each of them answers at least once.</summary>
    Spread,
    /// <summary>Every answer comes from the same pod, one of those listed (session affinity).</summary>
    Sticky,
    /// <summary>Connection refused at once (REJECT).</summary>
    Refused,
    /// <summary>No answer at all (DROP, or not proxied).</summary>
    NoAnswer,
    /// <summary>An HTTP answer with this status whose body contains a text (health check node port).</summary>
    Http,
}

public sealed record Expect(ExpectKind Kind, IReadOnlyList<string> Pods, string? Source = null, int Status = 0, string? BodyContains = null)
{
    public static Expect Spread(params string[] pods) => new(ExpectKind.Spread, pods);
    public static Expect SpreadSeenFrom(string source, params string[] pods) => new(ExpectKind.Spread, pods, source);
    public static Expect Sticky(params string[] pods) => new(ExpectKind.Sticky, pods);
    public static Expect Refused() => new(ExpectKind.Refused, []);
    public static Expect NoAnswer() => new(ExpectKind.NoAnswer, []);
    public static Expect Http(int status, string bodyContains) => new(ExpectKind.Http, [], Status: status, BodyContains: bodyContains);

    public override string ToString() => Kind switch
    {
        ExpectKind.Spread or ExpectKind.Sticky => $"{Kind} over {string.Join(",", Pods)}{(Source is null ? "" : $" seeing source {Source}")}",
        ExpectKind.Http => $"HTTP {Status} containing '{BodyContains}'",
        _ => Kind.ToString(),
    };
}
