using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;
using ProxyPlanes.Sources.Kubernetes;
using ProxyPlanes.TestKit;
using static ProxyPlanes.Core.Tests.Kubernetes.Objects;

namespace ProxyPlanes.Core.Tests.Kubernetes;

public class KubernetesSourceTests
{
    private const string ServicesPath = "/api/v1/services";
    private const string SlicesPath = "/apis/discovery.k8s.io/v1/endpointslices";
    private const string NodesPath = "/api/v1/nodes";

    [Fact]
    public async Task RunAsync_InitialListAcrossPages_DeliversEverythingThenInitialStateOnce()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed([.. Enumerable.Range(0, 7).Select(i => Service($"svc-{i}"))]);
        server.EndpointSlices.Seed([.. Enumerable.Range(0, 5).Select(i => Slice($"svc-{i}-abc", $"svc-{i}", $"10.244.1.{i + 1}"))]);
        server.Nodes.Seed(Node("node-a"), Node("node-b"));

        await using var run = await RunningSource.Start(server, Options(pageSize: 2)).InitialAsync();

        Assert.Equal(1, run.Sink.InitialStateDeliveredCount);
        Assert.Equal(13, run.Sink.CallsBeforeInitial);
        Assert.All(run.Sink.Calls, c => Assert.Equal(ChangeType.Add, c.Type));
        Assert.Equal(Enumerable.Range(0, 7).Select(i => $"default/svc-{i}"), run.Sink.Calls.Where(c => c.Kind == "Service").Select(c => c.Name));
        Assert.Equal(5, run.Sink.Calls.Count(c => c.Kind == "EndpointSlice"));
        Assert.Equal(["node-a"], run.Sink.Calls.Where(c => c.Kind == "Node").Select(c => c.Name));
        // List items come without kind; the source fills it in.
        Assert.All(run.Sink.Calls, c => Assert.Equal(c.Kind, c.Current!.Kind));

        var lists = server.RequestsTo(ServicesPath).Where(r => !r.IsWatch).ToList();
        Assert.Equal(4, lists.Count);
        Assert.All(lists, r => Assert.Equal("2", r["limit"]));
        Assert.Null(lists[0]["continue"]);
        Assert.All(lists.Skip(1), r => Assert.NotNull(r["continue"]));

        server.Services.Add(Service("late"));
        await run.Sink.WaitForCallAsync(c => c.Name == "default/late", "the late service");
        Assert.Equal(1, run.Sink.InitialStateDeliveredCount);
        Assert.Equal(0, run.Sink.Overlaps);
    }

    [Fact]
    public async Task RunAsync_WatchEvents_DeliverPairsWithTheCachedPrevious()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("web"));
        server.EndpointSlices.Seed(Slice("web-1", "web", "10.244.1.5", "10.244.2.7"));
        server.Nodes.Seed(Node("node-a"));
        await using var run = await RunningSource.Start(server).InitialAsync();
        var addedWeb = run.Sink.Calls.Single(c => c.Name == "default/web").Current;
        var addedSlice = run.Sink.Calls.Single(c => c.Name == "default/web-1").Current;
        var addedNode = run.Sink.Calls.Single(c => c.Name == "node-a").Current;

        server.Services.Modify(Service("web", 81));
        var update = await run.Sink.WaitForCallAsync(c => c.Type == ChangeType.Update && c.Kind == "Service", "the service update");
        Assert.Same(addedWeb, update.Previous);
        Assert.Equal(81, ((Service)update.Current!).Spec!.Ports![0].Port);

        server.EndpointSlices.Delete("default/web-1");
        var delete = await run.Sink.WaitForCallAsync(c => c.Type == ChangeType.Delete, "the slice delete");
        Assert.Equal("EndpointSlice", delete.Kind);
        Assert.Same(addedSlice, delete.Previous);

        server.Nodes.Modify(Node("node-a", "10.244.9.0/24"));
        var nodeUpdate = await run.Sink.WaitForCallAsync(c => c.Type == ChangeType.Update && c.Kind == "Node", "the node update");
        Assert.Same(addedNode, nodeUpdate.Previous);
        Assert.Equal("10.244.9.0/24", ((Node)nodeUpdate.Current!).Spec!.PodCIDR);

        // A DELETED for an object never delivered, and a MODIFIED repeating the cached resourceVersion, change nothing.
        var api = server.Services.Add(Service("api", 8080));
        var addedApi = await run.Sink.WaitForCallAsync(c => c.Name == "default/api", "the api service");
        var ghost = Service("ghost");
        ghost.Metadata!.ResourceVersion = api.Metadata!.ResourceVersion;
        server.Services.SendRaw(EventLine("DELETED", ghost));
        server.Services.SendRaw(EventLine("MODIFIED", api));
        server.Services.Add(Service("marker"));
        await run.Sink.WaitForCallAsync(c => c.Name == "default/marker", "the marker service");

        Assert.Equal(
            ["Add Service default/web", "Update Service default/web", "Add Service default/api", "Add Service default/marker"],
            run.Sink.Calls.Where(c => c.Kind == "Service").Select(c => c.ToString()));
        Assert.Equal(ChangeType.Add, addedApi.Type);
        Assert.Equal(1, run.Sink.InitialStateDeliveredCount);
        Assert.Equal(0, run.Sink.Overlaps);
    }

    [Fact]
    public async Task RunAsync_Bookmark_NextWatchResumesFromItsResourceVersion()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("web"));
        var listVersion = server.CurrentResourceVersion;
        await using var run = await RunningSource.Start(server).InitialAsync();
        await Eventually(() => server.Services.OpenWatches == 1, "the services watch");
        var calls = run.Sink.Calls.Count;

        var bookmark = server.Services.Bookmark();
        server.Services.EndOpenWatches(); // as when timeoutSeconds passes
        await Eventually(() => server.RequestsTo(ServicesPath).Count(r => r.IsWatch) == 2, "the second services watch");

        var watches = server.RequestsTo(ServicesPath).Where(r => r.IsWatch).ToList();
        Assert.Equal(listVersion.ToString(CultureInfo.InvariantCulture), watches[0]["resourceVersion"]);
        Assert.Equal(bookmark.ToString(CultureInfo.InvariantCulture), watches[1]["resourceVersion"]);
        Assert.True(bookmark > listVersion);
        Assert.Equal(calls, run.Sink.Calls.Count); // a bookmark is not a change
        Assert.Single(server.RequestsTo(ServicesPath), r => !r.IsWatch); // and no relist
    }

    [Theory]
    [InlineData(GoneMode.HttpStatus)]
    [InlineData(GoneMode.ErrorEvent)]
    public async Task RunAsync_ResourceVersionExpired_RelistsAndReportsWhatChangedMeanwhile(GoneMode mode)
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("a"), Service("b"), Service("c"));
        await using var run = await RunningSource.Start(server).InitialAsync();
        var addedA = run.Sink.Calls.Single(c => c.Name == "default/a").Current;
        var addedB = run.Sink.Calls.Single(c => c.Name == "default/b").Current;
        await Eventually(() => server.Services.OpenWatches == 1, "the services watch");
        server.Services.GoneMode = mode;

        // Disconnected while a is deleted, b changes and d appears; the history is compacted after.
        server.Services.ChangeWhileDisconnected(s =>
        {
            s.Delete("default/a");
            s.Modify(Service("b", 81));
            s.Add(Service("d"));
        });

        await run.Sink.WaitForAsync(s => s.Calls.Count >= 6, "the changes after the relist");
        Assert.Equal(
            ["Add Service default/a", "Add Service default/b", "Add Service default/c", "Update Service default/b", "Add Service default/d", "Delete Service default/a"],
            run.Sink.Calls.Select(c => c.ToString()));
        Assert.Same(addedA, run.Sink.Calls[5].Previous);
        Assert.Same(addedB, run.Sink.Calls[3].Previous);

        // list, watch (cut), watch (410), list, watch from the new list's resourceVersion
        await Eventually(() => server.RequestsTo(ServicesPath).Count >= 5, "the watch after the relist");
        var requests = server.RequestsTo(ServicesPath);
        Assert.Equal([false, true, true, false, true], requests.Take(5).Select(r => r.IsWatch));
        Assert.Equal(requests[1]["resourceVersion"], requests[2]["resourceVersion"]);
        Assert.True(long.Parse(requests[4]["resourceVersion"]!, CultureInfo.InvariantCulture) > long.Parse(requests[2]["resourceVersion"]!, CultureInfo.InvariantCulture));
        Assert.Contains(run.Logger.Entries, e => e.Message.Contains("has expired", StringComparison.Ordinal));
        Assert.Equal(1, run.Sink.InitialStateDeliveredCount);
    }

    [Fact]
    public async Task RunAsync_Error410EventOnOpenWatch_Relists()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.EndpointSlices.Seed(Slice("web-1", "web", "10.244.1.5"));
        await using var run = await RunningSource.Start(server).InitialAsync();
        await Eventually(() => server.EndpointSlices.OpenWatches == 1, "the slices watch");

        server.EndpointSlices.SendError(410, "Expired", "too old resource version: 1 (200)");

        await Eventually(() => server.RequestsTo(SlicesPath).Count(r => !r.IsWatch) == 2, "the relist");
        await Eventually(() => server.EndpointSlices.OpenWatches == 1, "the watch after the relist");
        Assert.Single(run.Sink.Calls); // the relist found nothing new
    }

    [Fact]
    public async Task RunAsync_ErrorEventOtherThan410_RelistsAndWatchesFromTheNewList()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("web"));
        await using var run = await RunningSource.Start(server).InitialAsync();
        await Eventually(() => server.Services.OpenWatches == 1, "the services watch");
        server.Services.Add(Service("api")); // moves the resourceVersion past the first list's

        server.Services.SendError(500, "InternalError", FakeCollection<Service>.WatchListRefusal);

        await Eventually(() => server.RequestsTo(ServicesPath).Count(r => !r.IsWatch) == 2, "the relist");
        await Eventually(() => server.RequestsTo(ServicesPath).Count(r => r.IsWatch) == 2 && server.Services.OpenWatches == 1, "the watch after the relist");
        var requests = server.RequestsTo(ServicesPath);
        Assert.Equal([false, true, false, true], requests.Select(r => r.IsWatch));
        Assert.True(long.Parse(requests[3]["resourceVersion"]!, CultureInfo.InvariantCulture) > long.Parse(requests[1]["resourceVersion"]!, CultureInfo.InvariantCulture));
        Assert.Contains(run.Logger.Entries, e => e.Message.Contains("ERROR event", StringComparison.Ordinal) && e.Message.Contains("listing again", StringComparison.Ordinal));
        Assert.Equal(["Add Service default/web", "Add Service default/api"], run.Sink.Calls.Select(c => c.ToString())); // the relist found nothing new

        server.Services.Modify(Service("web", 81)); // and the new watch delivers
        await run.Sink.WaitForCallAsync(c => c.Type == ChangeType.Update, "the update on the new watch");
    }

    [Fact]
    public async Task RunAsync_EveryWatch_StartsFromAListedResourceVersion_SoAWatchListRefusingServerIsNeverMet()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("web"));
        server.Nodes.Seed(Node("node-a"));
        await using var run = await RunningSource.Start(server).InitialAsync();
        await Eventually(() => server.Services.OpenWatches == 1 && server.EndpointSlices.OpenWatches == 1 && server.Nodes.OpenWatches == 1, "all three watches");
        server.Services.GoneMode = GoneMode.ErrorEvent;
        server.Services.ChangeWhileDisconnected(s => s.Add(Service("new"))); // forces a relist
        await run.Sink.WaitForCallAsync(c => c.Name == "default/new", "the service added while disconnected");
        // watch (cut), watch (410 ERROR event), list, watch from the new list
        await Eventually(() => server.RequestsTo(ServicesPath).Count(r => r.IsWatch) == 3, "the services watch after the relist");

        var watches = server.Requests.Where(r => r.IsWatch).ToList();
        Assert.True(watches.Count == 5, string.Join('\n', watches));
        Assert.All(watches, w => Assert.True(!string.IsNullOrEmpty(w["resourceVersion"]) && w["allowWatchBookmarks"] == "true", w.ToString()));
        Assert.DoesNotContain(run.Logger.Entries, e => e.Message.Contains("sendInitialEvents", StringComparison.Ordinal));

        // Positive control: the fake does refuse a watch without a resourceVersion, as such a server does.
        using var http = new HttpClient();
        var refused = await http.GetStringAsync(new Uri(server.BaseUri, ServicesPath + "?watch=1&allowWatchBookmarks=true&timeoutSeconds=5"));
        Assert.Contains("\"type\":\"ERROR\"", refused);
        Assert.Contains("sendInitialEvents", refused);
    }

    [Fact]
    public async Task RunAsync_ExpiredAfterAnOutage_RelistsAtOnce_NotAfterTheOutagesBackoff()
    {
        // The CI failure of 2026-12-07: after a minute without the API server the backoff was ~30 s, the first
        // answer was a 410, and the relist waited another ~30 s before the changes made meanwhile arrived.
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("web"));
        var backoff = TimeSpan.FromSeconds(3);
        await using var run = await RunningSource.Start(server, Options(initialBackoff: backoff, maxBackoff: backoff)).InitialAsync();
        await Eventually(() => server.Services.OpenWatches == 1, "the services watch");

        server.Down = true;
        // The services watch's own refused reconnection: the slices' or nodes' one (each backs off on its own) does
        // not show that the services watch has waited once already (CI of 2026-12-08 met exactly that: one wait).
        await Eventually(() => server.ResetWhileDownTo(ServicesPath) >= 1, "a services reconnection refused while the server is gone");
        server.Services.ChangeWhileDisconnected(c => c.Add(Service("d")));
        server.Down = false;

        await run.Sink.WaitForAsync(s => s.Calls.Any(c => c.Name == "default/d"), "the service added during the outage", TimeSpan.FromSeconds(20));
        var requests = server.RequestsTo(ServicesPath);
        // list, watch (cut by the outage), watch (410), list
        Assert.Equal([false, true, true, false], requests.Take(4).Select(r => r.IsWatch));
        var expired = requests[2];
        var relist = requests[3];
        var jitteredMinimum = backoff * (1 - ExponentialBackoff.Jitter);
        // Positive control: the outage's backoff was in force. From the watch the outage cut to the one that met the
        // 410 there were two waits (before the refused reconnection, and after it), each at least the jittered minimum.
        var outage = Stopwatch.GetElapsedTime(requests[1].Timestamp, expired.Timestamp);
        Assert.True(outage >= 2 * jitteredMinimum, $"the watch after the outage came {outage.TotalSeconds:F1} s after the cut one");
        // The fix: the 410 is an answer; the relist does not wait that backoff again.
        Assert.True(Stopwatch.GetElapsedTime(expired.Timestamp, relist.Timestamp) < jitteredMinimum,
            $"the relist came {Stopwatch.GetElapsedTime(expired.Timestamp, relist.Timestamp).TotalSeconds:F1} s after the 410");
        Assert.Contains(run.Logger.Entries, e => e.Message.Contains("has expired", StringComparison.Ordinal) && e.Message.EndsWith("listing again", StringComparison.Ordinal));
    }

    [Fact]
    public async Task RunAsync_ConnectionCutMidStream_ReconnectsWithGrowingBackoff()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("web"));
        var options = Options(initialBackoff: TimeSpan.FromMilliseconds(100), maxBackoff: TimeSpan.FromMilliseconds(400));
        await using var run = await RunningSource.Start(server, options).InitialAsync();
        await Eventually(() => server.Services.OpenWatches == 1, "the services watch");
        var started = Stopwatch.GetTimestamp();

        server.Services.CutNextWatches(4);
        server.Services.CutOpenWatches();
        await Eventually(() => server.RequestsTo(ServicesPath).Count(r => r.IsWatch) == 6 && server.Services.OpenWatches == 1, "the sixth watch");
        server.Services.Modify(Service("web", 81));
        await run.Sink.WaitForCallAsync(c => c.Type == ChangeType.Update, "the update after reconnecting");

        var watches = server.RequestsTo(ServicesPath).Where(r => r.IsWatch).ToList();
        // Every reconnection resumes from the list's resourceVersion: the half-written event was not applied.
        Assert.All(watches, w => Assert.Equal(watches[0]["resourceVersion"], w["resourceVersion"]));
        Assert.DoesNotContain(run.Sink.Calls, c => c.Name.Contains("half", StringComparison.Ordinal));
        // Waits 100, 200, 400, 400, 400 ms (±20 %): each gap at least the jittered minimum, the whole bounded.
        double[] nominal = [200, 400, 400, 400];
        for (var i = 0; i < nominal.Length; i++)
        {
            var gap = Stopwatch.GetElapsedTime(watches[i + 1].Timestamp, watches[i + 2].Timestamp).TotalMilliseconds;
            Assert.True(gap >= nominal[i] * (1 - ExponentialBackoff.Jitter) - 5, $"gap {i + 2}→{i + 3} was {gap:F0} ms, expected about {nominal[i]} ms");
        }

        Assert.True(Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(8));
        Assert.Contains(run.Logger.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("Watch of services failed", StringComparison.Ordinal));
        Assert.Equal(1, run.Sink.InitialStateDeliveredCount);
    }

    [Fact]
    public async Task RunAsync_Selectors_AreThoseKubeProxySends()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(
            Service("web"),
            Service("other-proxy", labels: new() { ["service.kubernetes.io/service-proxy-name"] = "foo" }),
            Service("flagged-headless", labels: new() { ["service.kubernetes.io/headless"] = "" }));
        var headlessSlice = Slice("db-1", "db", "10.244.1.9");
        headlessSlice.Metadata!.Labels!["service.kubernetes.io/headless"] = "";
        server.EndpointSlices.Seed(Slice("web-1", "web", "10.244.1.5"), headlessSlice);
        server.Nodes.Seed(Node("node-a"), Node("node-b"));
        var seeded = server.CurrentResourceVersion.ToString(CultureInfo.InvariantCulture);

        await using var run = await RunningSource.Start(server, Options(pageSize: 500)).InitialAsync();
        await Eventually(() => server.Requests.Count(r => r.IsWatch) == 3, "three watches");

        Assert.Equal(["EndpointSlice default/web-1", "Node node-a", "Service default/web"],
            run.Sink.Calls.Select(c => $"{c.Kind} {c.Name}").Order(StringComparer.Ordinal));

        const string ProxyLabels = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";
        Assert.Equal(ProxyLabels, KubernetesSource.ProxyLabelSelector);
        foreach (var path in (string[])[ServicesPath, SlicesPath])
        {
            var list = server.RequestsTo(path).Single(r => !r.IsWatch);
            Assert.Equal("?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name&limit=500", list.RawQuery);
            var watch = server.RequestsTo(path).Single(r => r.IsWatch);
            Assert.Equal(ProxyLabels, watch["labelSelector"]);
            AssertWatch(watch);
        }

        var nodeList = server.RequestsTo(NodesPath).Single(r => !r.IsWatch);
        Assert.Equal("?fieldSelector=metadata.name%3Dnode-a&limit=500", nodeList.RawQuery);
        var nodeWatch = server.RequestsTo(NodesPath).Single(r => r.IsWatch);
        Assert.Equal("metadata.name=node-a", nodeWatch["fieldSelector"]);
        Assert.Null(nodeWatch["labelSelector"]);
        AssertWatch(nodeWatch);

        Assert.All(server.Requests, r =>
        {
            Assert.Equal("application/json", r.Accept);
            Assert.Equal("proxyplanes", r.UserAgent);
            Assert.Null(r.Authorization);
        });

        void AssertWatch(SeenRequest watch)
        {
            Assert.Equal("1", watch["watch"]);
            Assert.Equal("true", watch["allowWatchBookmarks"]);
            Assert.Equal(seeded, watch["resourceVersion"]);
            Assert.InRange(int.Parse(watch["timeoutSeconds"]!, CultureInfo.InvariantCulture), 30, 60);
            Assert.Null(watch["limit"]);
        }
    }

    [Fact]
    public async Task RunAsync_ListSlowerThanRequestTimeout_RetriesAndDelivers()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Nodes.Seed(Node("node-a"));
        server.Nodes.SlowNextLists(1, TimeSpan.FromSeconds(30));
        var clientOptions = new KubernetesApiClientOptions { RequestTimeout = TimeSpan.FromMilliseconds(300) };

        await using var run = await RunningSource.Start(server, clientOptions: clientOptions).InitialAsync();

        Assert.Equal(2, server.RequestsTo(NodesPath).Count(r => !r.IsWatch));
        Assert.Equal(["Add Node node-a"], run.Sink.Calls.Select(c => c.ToString()));
        Assert.Contains(run.Logger.Entries, e => e.Level == LogLevel.Warning
            && e.Message.Contains("Listing nodes", StringComparison.Ordinal) && e.Message.Contains("took longer than 0.3 s", StringComparison.Ordinal));
    }

    [Fact]
    public async Task RunAsync_WatchTrickledByteByByte_ParsesEachEvent()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("web"));
        server.Services.Trickle = true;
        await using var run = await RunningSource.Start(server).InitialAsync();

        var labels = Enumerable.Range(0, 20).ToDictionary(i => $"example.com/label-{i}", i => new string('x', 40));
        server.Services.Modify(Service("web", 81, labels: labels));
        server.Services.Add(Service("api", 8080));

        var update = await run.Sink.WaitForCallAsync(c => c.Type == ChangeType.Update, "the trickled update");
        await run.Sink.WaitForCallAsync(c => c.Name == "default/api", "the trickled add");
        Assert.Equal(labels, update.Current!.Metadata!.Labels);
        Assert.Equal(81, ((Service)update.Current).Spec!.Ports![0].Port);
    }

    [Fact]
    public async Task RunAsync_ContinueTokenExpired_ListsEverythingAtOnce()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed([.. Enumerable.Range(0, 5).Select(i => Service($"svc-{i}"))]);
        server.Services.ExpireNextContinueToken = true; // as though etcd compacted between the first and second page

        await using var run = await RunningSource.Start(server, Options(pageSize: 2)).InitialAsync();

        var lists = server.RequestsTo(ServicesPath).Where(r => !r.IsWatch).ToList();
        Assert.Equal(3, lists.Count);
        Assert.Equal(("2", null), (lists[0]["limit"], lists[0]["continue"]));
        Assert.Equal("2", lists[1]["limit"]);
        Assert.NotNull(lists[1]["continue"]);
        Assert.Equal((null, null), (lists[2]["limit"], lists[2]["continue"]));
        Assert.Equal(5, run.Sink.Calls.Count(c => c.Kind == "Service"));
        Assert.Equal(5, run.Sink.Calls.Select(c => c.Name).Distinct().Count());
    }

    [Fact]
    public async Task RunAsync_ErrorStatuses_RetriedUntilTheyPass()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Nodes.Seed(Node("node-a"));
        server.Services.Seed(Service("web"));
        server.Nodes.FailNextLists(500, 403);
        server.Services.FailNextWatches(503, 500);

        await using var run = await RunningSource.Start(server).InitialAsync();
        await Eventually(() => server.Services.OpenWatches == 1, "the services watch");
        server.Services.Modify(Service("web", 81));
        await run.Sink.WaitForCallAsync(c => c.Type == ChangeType.Update, "the update");

        Assert.Equal(3, server.RequestsTo(NodesPath).Count(r => !r.IsWatch));
        Assert.Equal(3, server.RequestsTo(ServicesPath).Count(r => r.IsWatch));
        Assert.Single(server.RequestsTo(ServicesPath), r => !r.IsWatch); // a failed watch resumes, it does not relist
        Assert.Contains(run.Logger.Entries, e => e.Message.Contains("403", StringComparison.Ordinal));
    }

    [Fact]
    public async Task RunAsync_SinkThrows_RunAsyncFailsWithThatException()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("bad"));
        var sink = new RecordingSink { ThrowOn = c => c.Name == "default/bad" ? new InvalidOperationException("boom") : null };
        await using var run = RunningSource.Start(server, sink: sink);

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => run.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal("boom", error.Message);
        await Eventually(() => server.Services.OpenWatches + server.EndpointSlices.OpenWatches + server.Nodes.OpenWatches == 0, "the watches to close");
    }

    [Fact]
    public async Task RunAsync_Cancelled_EndsQuietlyAndClosesWatches()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Seed(Service("web"));
        var run = await RunningSource.Start(server).InitialAsync();
        await Eventually(() => server.Services.OpenWatches + server.EndpointSlices.OpenWatches + server.Nodes.OpenWatches == 3, "three watches");

        await run.DisposeAsync();

        Assert.True(run.Task.IsCompletedSuccessfully);
        await Eventually(() => server.Services.OpenWatches + server.EndpointSlices.OpenWatches + server.Nodes.OpenWatches == 0, "the watches to close");
    }

    [Fact]
    public async Task RunAsync_TwiceAtOnce_Throws()
    {
        await using var server = await FakeApiServer.StartAsync();
        await using var run = await RunningSource.Start(server).InitialAsync();

        await Assert.ThrowsAsync<InvalidOperationException>(() => run.Source.RunAsync(new RecordingSink(), CancellationToken.None));
    }

    [Fact]
    public async Task WatchAsync_SilentConnection_GivesUpAfterTheTimeoutPlusGrace()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Services.Silent = true;
        using var client = new KubernetesApiClient(
            new KubernetesClientConfig { Server = server.BaseUri }, new KubernetesApiClientOptions { WatchIdleGrace = TimeSpan.FromMilliseconds(300) });
        var started = Stopwatch.GetTimestamp();

        var error = await Assert.ThrowsAsync<TimeoutException>(async () =>
        {
            await foreach (var _ in client.WatchAsync(KubernetesResources.Services, "100", default, TimeSpan.FromSeconds(1), CancellationToken.None))
            {
            }
        }).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.InRange(Stopwatch.GetElapsedTime(started).TotalSeconds, 1.2, 8);
        Assert.Contains("nothing received for 1.3 s", error.Message);
        await Eventually(() => server.Services.OpenWatches == 0, "the server to see the watch closed");
    }

    internal static KubernetesSourceOptions Options(
        int pageSize = 500, TimeSpan? initialBackoff = null, TimeSpan? maxBackoff = null) => new()
    {
        PageSize = pageSize,
        InitialBackoff = initialBackoff ?? RunningSource.FastOptions.InitialBackoff,
        MaxBackoff = maxBackoff ?? RunningSource.FastOptions.MaxBackoff,
        MinWatchTimeout = RunningSource.FastOptions.MinWatchTimeout,
        HealthyWatch = RunningSource.FastOptions.HealthyWatch,
        ShortWatch = RunningSource.FastOptions.ShortWatch,
        Random = new Random(11),
    };

    internal static async Task Eventually(Func<bool> condition, string what, TimeSpan? timeout = null)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)((timeout ?? TimeSpan.FromSeconds(10)).TotalSeconds * Stopwatch.Frequency);
        while (!condition())
        {
            if (Stopwatch.GetTimestamp() > deadline) throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(10);
        }
    }

    private static string EventLine(string type, Service service)
    {
        service.Kind = "Service";
        service.ApiVersion = "v1";
        return JsonSerializer.Serialize(new KubernetesWatchEvent<Service> { Type = type, Object = service }, KubernetesJsonContext.Default.ServiceWatchEvent);
    }
}
