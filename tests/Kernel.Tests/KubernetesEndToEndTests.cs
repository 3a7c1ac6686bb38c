using System.Globalization;
using System.Net;
using System.Net.Sockets;
using ProxyPlanes.Model;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The real proxyplanes binary in the sandbox's node namespace watches <see cref="FakeApiServer"/> through a
/// kubeconfig (no --manifests), and real packets follow what the API server pushes: MODIFIED, ADDED and
/// DELETED events, a cut watch connection (reconnect from the last resourceVersion) and an expired
/// resourceVersion (410, relist). The fake server listens on the node namespace's own loopback, on a socket
/// made inside that namespace, because that is the loopback the proxy sees.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class KubernetesEndToEndTests
{
    private const string WebIP = "10.96.0.10";
    private const string ApiIP = "10.96.0.11";
    private const string NetworkProgrammingCount = "kubeproxy_network_programming_duration_seconds_count";
    private const string IPv4 = "ip_family=\"IPv4\"";
    private static readonly TimeSpan SyncTimeout = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task WatchedChanges_ReachTheKernel_AndShowInNetworkProgrammingLatency()
    {
        await using var cluster = await ApiCluster.StartAsync();
        var server = cluster.Server;

        // The first full list is in the kernel (the proxy is healthy): both endpoints answer through the VIP.
        await cluster.AssertAnsweredByAsync(WebIP, "pod-0", "pod-1");
        Assert.Equal(0, ProxyProcess.Metric(await cluster.Proxy.ScrapeAsync(), NetworkProgrammingCount, IPv4) ?? 0);

        // MODIFIED: the slice now holds only pod-1, stamped with the time of the change.
        await cluster.PushAndSyncAsync(() => server.EndpointSlices.Modify(cluster.Slice("web", 1)));
        await cluster.AssertAnsweredByAsync(WebIP, "pod-1");
        var scrape = await cluster.Proxy.ScrapeAsync();
        Assert.True(ProxyProcess.Metric(scrape, NetworkProgrammingCount, IPv4) >= 1, scrape);
        Assert.True(ProxyProcess.Metric(scrape, "kubeproxy_network_programming_duration_seconds_sum", IPv4) < SyncTimeout.TotalSeconds, scrape);

        // ADDED: a second Service, refused at once while it has no endpoints, then its slice.
        await cluster.PushAndSyncAsync(() => server.Services.Add(ApiCluster.Service("api", ApiIP)));
        await cluster.AssertNotAnsweredAsync(ApiIP, ProbeOutcome.Refused);
        await cluster.PushAndSyncAsync(() => server.EndpointSlices.Add(cluster.Slice("api", 2)));
        await cluster.AssertAnsweredByAsync(ApiIP, "pod-2");

        // DELETED: the slice (refused again), then the Service (no rules at all: nothing answers).
        await cluster.PushAndSyncAsync(() => server.EndpointSlices.Delete("test/api-abcde"));
        await cluster.AssertNotAnsweredAsync(ApiIP, ProbeOutcome.Refused);
        await cluster.PushAndSyncAsync(() => server.Services.Delete("test/api"));
        await cluster.AssertNotAnsweredAsync(ApiIP, ProbeOutcome.TimedOut, ProbeOutcome.Unreachable);
        await cluster.AssertAnsweredByAsync(WebIP, "pod-1");

        // Both slice changes that carried a trigger time were measured.
        Assert.True(ProxyProcess.Metric(await cluster.Proxy.ScrapeAsync(), NetworkProgrammingCount, IPv4) >= 2);
        // Every request carried the kubeconfig's token (the server answers 401 otherwise).
        Assert.All(server.Requests, r => Assert.Equal("Bearer " + ApiCluster.Token, r.Authorization));
    }

    [Fact]
    public async Task WatchCutOrExpired_ChangesStillReachTheKernel()
    {
        await using var cluster = await ApiCluster.StartAsync();
        var server = cluster.Server;
        var slices = server.EndpointSlices;
        const string path = "/apis/discovery.k8s.io/v1/endpointslices";
        int Watches() => server.RequestsTo(path).Count(r => r.IsWatch);
        int Lists() => server.RequestsTo(path).Count(r => !r.IsWatch);

        // The watch connection drops mid-event: the proxy watches again from its last resourceVersion,
        // and a change pushed on the new connection reaches the kernel.
        var watches = Watches();
        var lastVersion = server.RequestsTo(path).Last(r => r.IsWatch)["resourceVersion"];
        slices.CutOpenWatches();
        await cluster.WaitUntilAsync(() => Watches() > watches && slices.OpenWatches == 1, "the proxy to watch endpointslices again");
        Assert.Equal(lastVersion, server.RequestsTo(path).Last(r => r.IsWatch)["resourceVersion"]);
        Assert.Equal(1, Lists()); // no relist was needed
        await cluster.PushAndSyncAsync(() => slices.Modify(cluster.Slice("web", 0)));
        await cluster.AssertAnsweredByAsync(WebIP, "pod-0");

        // A change made while the proxy is disconnected, after which the history is compacted: the watch from
        // the proxy's resourceVersion is told 410 Gone, the proxy lists again, and the relist's difference
        // reaches the kernel.
        await cluster.PushAndSyncAsync(() => slices.ChangeWhileDisconnected(c => c.Modify(cluster.Slice("web", 1, 2))));
        Assert.Equal(2, Lists());
        await cluster.AssertAnsweredByAsync(WebIP, "pod-1", "pod-2");

        // The watch that follows the relist is live: one more change.
        await cluster.PushAndSyncAsync(() => slices.Modify(cluster.Slice("web", 2)));
        await cluster.AssertAnsweredByAsync(WebIP, "pod-2");
        Assert.Equal(2, Lists());
    }

    [Fact]
    public async Task ApiServerGoneForAMinute_TrafficKeepsFlowing_ThenACompactedHistoryConverges()
    {
        // Periodic syncs every 2 s keep running while the API server is gone (nothing to change).
        await using var cluster = await ApiCluster.StartAsync("--sync-period=2s");
        var server = cluster.Server;
        await cluster.AssertAnsweredByAsync(WebIP, "pod-0", "pod-1");

        // Gone: every connection is reset. The rules stay; /healthz stays 200 as kube-proxy's does (no
        // change is waiting, syncs still succeed: the proxy cannot tell a quiet cluster from an absent API).
        server.Down = true;
        var outage = System.Diagnostics.Stopwatch.StartNew();
        while (outage.Elapsed < TimeSpan.FromSeconds(60))
        {
            await cluster.AssertAnsweredByAsync(WebIP, "pod-0", "pod-1");
            Assert.Equal(200, (await cluster.Proxy.GetAsync(10256, "/healthz")).StatusCode);
            await Task.Delay(TimeSpan.FromSeconds(5));
        }
        Assert.True(server.ResetWhileDown >= 3, $"the proxy tried {server.ResetWhileDown} times while the server was gone");
        Assert.Contains("retrying in", cluster.Proxy.Output);

        // Back, with what changed meanwhile and a compacted history: the watch from the proxy's resourceVersion is
        // told 410 Gone, the proxy lists again, and the difference reaches the kernel (backoff is at most 30 s).
        var listsBefore = server.RequestsTo("/apis/discovery.k8s.io/v1/endpointslices").Count(r => !r.IsWatch);
        server.EndpointSlices.ChangeWhileDisconnected(c => c.Modify(cluster.Slice("web", 1, 2)));
        server.Services.ChangeWhileDisconnected(c => c.Add(ApiCluster.Service("api", ApiIP)));
        server.Down = false;
        await cluster.WaitUntilAsync(async () => (await ProxyScenario.SpreadAsync(cluster.Sandbox.Client, WebIP, 80, count: 10)).Keys.Order().SequenceEqual(["pod-1", "pod-2"]),
            "the change made while the API server was gone", TimeBudget.For(TimeSpan.FromSeconds(60)));
        await cluster.AssertAnsweredByAsync(WebIP, "pod-1", "pod-2");
        // The new service, without endpoints yet: refused (each resource relists after its own backoff).
        await cluster.WaitUntilAsync(async () => (await cluster.Sandbox.Client.HttpGetAsync(ApiIP, 80, "/", TimeSpan.FromSeconds(1))).Outcome == ProbeOutcome.Refused,
            "the service added while the API server was gone", TimeBudget.For(TimeSpan.FromSeconds(60)));
        Assert.True(server.RequestsTo("/apis/discovery.k8s.io/v1/endpointslices").Count(r => !r.IsWatch) > listsBefore, "no relist after the 410");
        Assert.Equal(200, (await cluster.Proxy.GetAsync(10256, "/healthz")).StatusCode);
    }

    /// <summary>
    /// A sandbox with three pods, the fake API server on the node namespace's 127.0.0.1 serving the web Service
    /// (pod-0 and pod-1) and the Node, a kubeconfig for it, and the proxy started on that kubeconfig.
    /// </summary>
    private sealed class ApiCluster : IAsyncDisposable
    {
        public const string Token = "e2e-token.abcdef";

        private readonly ProxyScenario _scenario;
        private readonly DirectoryInfo _directory;
        private ProxyProcess? _proxy;

        private ApiCluster(ProxyScenario scenario, FakeApiServer server, DirectoryInfo directory)
        {
            _scenario = scenario;
            Server = server;
            _directory = directory;
        }

        public ClusterSandbox Sandbox => _scenario.Sandbox;
        public FakeApiServer Server { get; }
        public ProxyProcess Proxy => _proxy ?? throw new InvalidOperationException("the proxy was not started");

        public static async Task<ApiCluster> StartAsync(params string[] extraArgs)
        {
            var directory = Directory.CreateTempSubdirectory("proxyplanes-kube-e2e-");
            ProxyScenario? scenario = null;
            FakeApiServer? server = null;
            try
            {
                scenario = await ProxyScenario.CreateAsync(pods: 3);
                // The proxy's 127.0.0.1 is the node namespace's: make the listening socket there, serve it from here.
                var socket = scenario.Sandbox.Node.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }

                server = await FakeApiServer.StartAsync(listenSocket: socket);
                server.Authorize = header => header == "Bearer " + Token;
                var cluster = new ApiCluster(scenario, server, directory);
                server.Services.Seed(Service("web", WebIP));
                server.EndpointSlices.Seed(cluster.Slice("web", 0, 1));
                server.Nodes.Seed(new Node
                {
                    Metadata = new ObjectMeta { Name = scenario.Sandbox.NodeName, Uid = Guid.NewGuid().ToString() },
                    Spec = new NodeSpec { PodCIDR = scenario.Sandbox.PodCidr, PodCIDRs = [scenario.Sandbox.PodCidr] },
                    Status = new NodeStatus { Addresses = [new NodeAddress { Type = "InternalIP", Address = scenario.Sandbox.NodeIp }] },
                });

                var kubeconfig = Path.Combine(directory.FullName, "kubeconfig");
                await File.WriteAllTextAsync(kubeconfig, $"""
                    apiVersion: v1
                    kind: Config
                    current-context: e2e
                    clusters:
                    - name: fake
                      cluster:
                        server: {server.BaseUri}
                    contexts:
                    - name: e2e
                      context:
                        cluster: fake
                        user: proxy
                    users:
                    - name: proxy
                      user:
                        token: {Token}
                    """);
                cluster._proxy = ProxyProcess.Start(scenario.Sandbox.Node,
                [
                    "run", "--mode=iptables", $"--kubeconfig={kubeconfig}", $"--hostname-override={scenario.Sandbox.NodeName}",
                    $"--cluster-cidr={scenario.Sandbox.ClusterCidr}", "--min-sync-period=50ms", "--v=4", .. extraArgs,
                ]);
                await cluster._proxy.WaitHealthyAsync(TimeSpan.FromSeconds(30));
                return cluster;
            }
            catch
            {
                await DisposeAsync(null, server, scenario, directory);
                throw;
            }
        }

        /// <summary>Pushes a change through the fake API server and waits until it is in the kernel.</summary>
        public async Task PushAndSyncAsync(Action push)
        {
            var changesBefore = await Proxy.ChangesSeenAsync();
            push();
            await Proxy.WaitForChangesSyncedAsync(changesBefore, SyncTimeout);
        }

        /// <summary>Requests from the client to ip:80 are answered by exactly these pods.</summary>
        public async Task AssertAnsweredByAsync(string ip, params string[] pods)
        {
            var answers = await ProxyScenario.SpreadAsync(Sandbox.Client, ip, 80, count: 10 * pods.Length);
            Assert.True(answers.Keys.Order().SequenceEqual(pods.Order()),
                $"{ip}: expected answers from {string.Join(", ", pods)}, got {string.Join(", ", answers.Select(a => $"{a.Key}({a.Value})"))}\n{Proxy.Output}");
        }

        /// <summary>A request from the client to ip:80 is not answered, and fails in one of these ways.</summary>
        public async Task AssertNotAnsweredAsync(string ip, params ProbeOutcome[] outcomes)
        {
            var result = await Sandbox.Client.HttpGetAsync(ip, 80, "/cgi-bin/who", TimeSpan.FromSeconds(1));
            Assert.True(outcomes.Contains(result.Outcome), $"{ip}: expected {string.Join(" or ", outcomes)}, got {result}\n{Proxy.Output}");
        }

        public Task WaitUntilAsync(Func<bool> condition, string what) => WaitUntilAsync(() => Task.FromResult(condition()), what);

        public async Task WaitUntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null)
        {
            var deadline = DateTime.UtcNow + (timeout ?? SyncTimeout);
            while (!await condition())
            {
                if (DateTime.UtcNow > deadline)
                    throw new TimeoutException($"timed out waiting for {what}; requests:\n{string.Join('\n', Server.Requests)}\n{Proxy.Output}");
                await Task.Delay(20);
            }
        }

        public static Service Service(string name, string clusterIP) => new()
        {
            Metadata = new ObjectMeta { Name = name, Namespace = "test", Uid = Guid.NewGuid().ToString() },
            Spec = new ServiceSpec
            {
                Type = "ClusterIP",
                ClusterIP = clusterIP,
                ClusterIPs = [clusterIP],
                Ports = [new ServicePort { Name = "http", Protocol = "TCP", Port = 80, TargetPort = IntOrString.FromInt(8080) }],
            },
        };

        /// <summary>The service's one slice with the given pods (by index), stamped with now as its last change trigger time.</summary>
        public EndpointSlice Slice(string service, params int[] pods) => new()
        {
            Metadata = new ObjectMeta
            {
                Name = service + "-abcde",
                Namespace = "test",
                Labels = new()
                {
                    ["kubernetes.io/service-name"] = service,
                    ["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io",
                },
                // RFC 3339 with up to nanosecond precision, trailing zeros dropped, as the controller writes it.
                Annotations = new()
                {
                    ["endpoints.kubernetes.io/last-change-trigger-time"] =
                        DateTimeOffset.UtcNow.ToString("yyyy'-'MM'-'dd'T'HH':'mm':'ss.FFFFFFF'Z'", CultureInfo.InvariantCulture),
                },
            },
            AddressType = "IPv4",
            Ports = [new EndpointPort { Name = "http", Protocol = "TCP", Port = 8080 }],
            Endpoints =
            [
                .. pods.Select(i => new Endpoint
                {
                    Addresses = [_scenario.PodIp(i)],
                    Conditions = new EndpointConditions { Ready = true, Serving = true, Terminating = false },
                    NodeName = Sandbox.Pods[$"pod-{i}"].NodeName,
                }),
            ],
        };

        public ValueTask DisposeAsync() => DisposeAsync(_proxy, Server, _scenario, _directory);

        /// <summary>The proxy first (it would log the server going away), then the server and its socket, then the namespaces.</summary>
        private static async ValueTask DisposeAsync(ProxyProcess? proxy, FakeApiServer? server, ProxyScenario? scenario, DirectoryInfo directory)
        {
            try
            {
                if (proxy is not null) await proxy.DisposeAsync();
            }
            finally
            {
                try
                {
                    if (server is not null) await server.DisposeAsync();
                }
                finally
                {
                    try
                    {
                        if (scenario is not null) await scenario.DisposeAsync();
                    }
                    finally
                    {
                        directory.Delete(recursive: true);
                    }
                }
            }
        }
    }
}
