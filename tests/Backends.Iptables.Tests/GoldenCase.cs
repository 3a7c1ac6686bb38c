using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Sources.Manifests;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>
/// One folder of testdata/: input.yaml (the cluster), options.json (node settings), the expected
/// planner output per backend, and optionally update.yaml (the cluster after a change) with the
/// expected partial sync. Run with UPDATE_GOLDEN=1 to rewrite the expected files.
/// </summary>
public sealed class GoldenCase
{
    public static string TestData => RepoPaths.TestData;

    public static IEnumerable<object[]> All() =>
        System.IO.Directory.GetDirectories(TestData).Where(d => File.Exists(Path.Combine(d, "input.yaml")))
            .Select(Path.GetFileName).Order(StringComparer.Ordinal).Select(name => new object[] { name! });

    /// <summary>The cases with an update.yaml (a partial sync to check).</summary>
    public static IEnumerable<object[]> WithUpdate() =>
        All().Where(c => File.Exists(Path.Combine(TestData, (string)c[0], "update.yaml")));

    public GoldenCase(string name) => Directory = Path.Combine(TestData, name);

    public string Directory { get; }

    public CaseOptions Options =>
        File.Exists(Path.Combine(Directory, "options.json"))
            ? JsonSerializer.Deserialize<CaseOptions>(File.ReadAllText(Path.Combine(Directory, "options.json")), new JsonSerializerOptions { PropertyNameCaseInsensitive = true })!
            : new CaseOptions();

    /// <summary>Feeds input.yaml (then update.yaml, if any) through the real controller and returns each sync's request.</summary>
    public async Task<(SyncRequest Initial, SyncRequest? Update)> SyncRequestsAsync()
    {
        var options = Options;
        var backend = new CapturingBackend();
        using var metrics = new ProxyMetrics();
        var controller = new ProxyController(
            new ProxyOptions
            {
                HostName = options.HostName,
                ClusterCidrs = new EquatableArray<IpPrefix>(options.ClusterCidrs.Select(IpPrefix.Parse)),
                MasqueradeAll = options.MasqueradeAll,
                DetectLocalMode = Enum.Parse<LocalDetectMode>(options.DetectLocalMode, ignoreCase: true),
                PodInterface = options.PodInterface,
            },
            backend, metrics, NullLogger.Instance);
        var input = ManifestParser.Load(Path.Combine(Directory, "input.yaml"));
        Deliver(controller, ManifestDocumentSet.Empty, input);
        controller.OnInitialStateDelivered();
        await controller.SyncNowAsync(full: true);
        var initial = WithNodePorts(backend.Requests[^1], options);

        var updatePath = Path.Combine(Directory, "update.yaml");
        if (!File.Exists(updatePath)) return (initial, null);
        Deliver(controller, input, ManifestParser.Load(updatePath));
        await controller.SyncNowAsync(full: false);
        return (initial, WithNodePorts(backend.Requests[^1], options));
    }

    /// <summary>Compares with (or, under UPDATE_GOLDEN=1, writes) an expected file of this case.</summary>
    public void AssertGolden(string fileName, string actual)
    {
        var path = Path.Combine(Directory, fileName);
        if (Environment.GetEnvironmentVariable("UPDATE_GOLDEN") == "1")
        {
            File.WriteAllText(path, actual);
            return;
        }
        Assert.True(File.Exists(path), $"{path} is missing: run the tests with UPDATE_GOLDEN=1 and review the new file");
        Assert.Equal(File.ReadAllText(path), actual);
    }

    private static SyncRequest WithNodePorts(SyncRequest request, CaseOptions options) =>
        options.NodePortAddresses is null
            ? request
            : request with
            {
                State = request.State with
                {
                    Network = request.State.Network with { NodePortAddresses = new EquatableArray<IPAddress>(options.NodePortAddresses.Select(IPAddress.Parse)) },
                },
            };

    private static void Deliver(IObjectSink sink, ManifestDocumentSet before, ManifestDocumentSet after)
    {
        foreach (var old in before.Objects.Where(o => !after.TryGet(o.Key, out _)))
            Send(sink, old.Object, null);
        foreach (var current in after.Objects)
            Send(sink, before.TryGet(current.Key, out var old) ? old.Object : null, current.Object);
    }

    private static void Send(IObjectSink sink, IKubernetesObject? previous, IKubernetesObject? current)
    {
        switch (current ?? previous)
        {
            case Service: sink.OnService(previous as Service, current as Service); break;
            case EndpointSlice: sink.OnEndpointSlice(previous as EndpointSlice, current as EndpointSlice); break;
            case Node: sink.OnNode(previous as Node, current as Node); break;
        }
    }

    private sealed class CapturingBackend : IProxyBackend
    {
        public List<SyncRequest> Requests { get; } = [];
        public string Mode => "capture";
        public IReadOnlyList<IpFamily> Families => [IpFamily.IPv4, IpFamily.IPv6];
        public Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken)
        {
            Requests.Add(request);
            return Task.FromResult(default(SyncTimings));
        }
        public Task<bool> CanaryIntactAsync(CancellationToken cancellationToken) => Task.FromResult(true);
        public Task CleanupAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}

public sealed record CaseOptions
{
    public string HostName { get; init; } = "node-a";
    public List<string> ClusterCidrs { get; init; } = ["10.244.0.0/16"];
    public bool MasqueradeAll { get; init; }
    public List<string>? NodePortAddresses { get; init; }
    public string DetectLocalMode { get; init; } = "ClusterCidr";
    public string? PodInterface { get; init; }
}
