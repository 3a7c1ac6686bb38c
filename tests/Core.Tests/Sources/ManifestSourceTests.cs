using System.Diagnostics;
using ProxyPlanes.Model;
using ProxyPlanes.Sources.Manifests;
using static ProxyPlanes.Core.Tests.Sources.Manifests;

namespace ProxyPlanes.Core.Tests.Sources;

public class ManifestSourceTests
{
    [Fact]
    public async Task RunAsync_Start_DeliversAddsThenInitialStateDelivered()
    {
        using var dir = new TempDirectory();
        dir.Write("a-services.yaml", Docs(Service("web"), Slice("web-1", "web", "10.244.1.5"), Service("api", 8080)));
        dir.Write("b-nodes.yaml", Node("node-a"));

        await using var run = await RunningSource.StartAsync(dir.Path);

        Assert.Equal(1, run.Sink.InitialStateDeliveredCount);
        Assert.Equal(4, run.Sink.EventsBeforeInitial);
        Assert.Equal(
            ["Add Node node-a", "Add Service web", "Add Service api", "Add EndpointSlice web-1"],
            run.Sink.Events.Select(e => e.ToString()));
        Assert.Null(run.Source.LastError);
    }

    [Fact]
    public async Task RunAsync_TestdataFolder_DeliversEveryObject()
    {
        await using var run = await RunningSource.StartAsync(TestData.ManifestsDirectory);

        Assert.Equal(13, run.Sink.EventsBeforeInitial);
        Assert.All(run.Sink.Events, e => Assert.Equal(ChangeType.Add, e.Type));
    }

    [Fact]
    public async Task RunAsync_EditEndpointList_EmitsOneEndpointSliceUpdate()
    {
        using var dir = new TempDirectory();
        var file = dir.Write("web.yaml", Docs(Service("web"), Slice("web-1", "web", "10.244.1.5", "10.244.2.7")));
        dir.Write("other.yaml", Docs(Service("api", 8080), Node("node-a")));
        await using var run = await RunningSource.StartAsync(dir.Path);
        var initial = run.Sink.Events.Count;

        var reload = await run.ChangeAsync(() => File.WriteAllText(file, Docs(Service("web"), Slice("web-1", "web", "10.244.1.5", "10.244.3.9"))));

        var change = Assert.Single(run.Sink.Events.Skip(initial));
        Assert.Equal(ChangeType.Update, change.Type);
        Assert.Equal("EndpointSlice", change.Kind);
        Assert.Equal(["10.244.1.5", "10.244.2.7"], Addresses(change.Previous));
        Assert.Equal(["10.244.1.5", "10.244.3.9"], Addresses(change.Current));
        Assert.Same(run.Sink.Events.Single(e => e.Kind == "EndpointSlice" && e.Type == ChangeType.Add).Current, change.Previous);
        Assert.Equal((0, 1, 0), (reload.Added, reload.Updated, reload.Deleted));
        Assert.Equal([file], reload.ChangedFiles);
    }

    [Fact]
    public async Task RunAsync_RewriteWithSameContent_EmitsNothing()
    {
        using var dir = new TempDirectory();
        var file = dir.Write("web.yaml", Docs(Service("web"), Slice("web-1", "web", "10.244.1.5")));
        await using var run = await RunningSource.StartAsync(dir.Path);
        var initial = run.Sink.Events.Count;

        // Different text (comments, flow style, key order), same objects.
        var reload = await run.ChangeAsync(() => File.WriteAllText(file,
            "# edited\n" + Docs(Service("web"), Slice("web-1", "web", "10.244.1.5").Replace("addressType: IPv4\n", "")
                + "addressType: IPv4\n")));

        Assert.Equal(initial, run.Sink.Events.Count);
        Assert.Equal((0, 0, 0), (reload.Added, reload.Updated, reload.Deleted));
        Assert.Empty(reload.Errors);
    }

    [Fact]
    public async Task RunAsync_RemoveObjectFromFile_EmitsDelete()
    {
        using var dir = new TempDirectory();
        var file = dir.Write("web.yaml", Docs(Service("web"), Slice("web-1", "web", "10.244.1.5"), Slice("web-2", "web", "10.244.1.6")));
        await using var run = await RunningSource.StartAsync(dir.Path);
        var initial = run.Sink.Events.Count;

        await run.ChangeAsync(() => File.WriteAllText(file, Docs(Service("web"), Slice("web-1", "web", "10.244.1.5"))));

        var change = Assert.Single(run.Sink.Events.Skip(initial));
        Assert.Equal(("Delete EndpointSlice web-2"), change.ToString());
        Assert.Null(change.Current);
    }

    [Fact]
    public async Task RunAsync_AddAndDeleteFiles_EmitAddsAndDeletes()
    {
        using var dir = new TempDirectory();
        var web = dir.Write("web.yaml", Docs(Service("web"), Slice("web-1", "web", "10.244.1.5")));
        await using var run = await RunningSource.StartAsync(dir.Path);
        var initial = run.Sink.Events.Count;

        await run.ChangeAsync(() => dir.Write("sub/api.yaml", Docs(Service("api", 8080), Slice("api-1", "api", "10.244.2.1"))));
        Assert.Equal(["Add Service api", "Add EndpointSlice api-1"], run.Sink.Events.Skip(initial).Select(e => e.ToString()));

        await run.ChangeAsync(() => File.Delete(web));
        Assert.Equal(["Delete EndpointSlice web-1", "Delete Service web"], run.Sink.Events.Skip(initial + 2).Select(e => e.ToString()));
    }

    [Fact]
    public async Task RunAsync_MalformedSave_KeepsLastGoodObjectsAndReportsFileAndLine()
    {
        using var dir = new TempDirectory();
        var file = dir.Write("web.yaml", Docs(Service("web"), Slice("web-1", "web", "10.244.1.5")));
        await using var run = await RunningSource.StartAsync(dir.Path);
        var initial = run.Sink.Events.Count;

        // Line 5 is badly indented.
        var reload = await run.ChangeAsync(() => File.WriteAllText(file,
            Docs(Service("web").Replace("  namespace: shop", " namespace: shop"), Slice("web-1", "web", "10.244.9.9"))));

        Assert.Equal(initial, run.Sink.Events.Count);
        var error = Assert.Single(reload.Errors);
        Assert.Same(error, run.Source.LastError);
        Assert.Same(error, Assert.Single(run.Failures));
        Assert.Equal((file, 5, 2), (error.File, error.Line, error.Column));
        Assert.StartsWith($"{file}:5:2: ", error.Message);
        Assert.Equal([error], run.Source.CurrentErrors);

        // Fixed: the change applies and the error clears.
        await run.ChangeAsync(() => File.WriteAllText(file, Docs(Service("web"), Slice("web-1", "web", "10.244.9.9"))));

        var change = Assert.Single(run.Sink.Events.Skip(initial));
        Assert.Equal(["10.244.1.5"], Addresses(change.Previous));
        Assert.Equal(["10.244.9.9"], Addresses(change.Current));
        Assert.Null(run.Source.LastError);
        Assert.Empty(run.Source.CurrentErrors);
    }

    [Fact]
    public async Task RunAsync_TypeErrorInOneFile_OtherFilesStillUpdate()
    {
        using var dir = new TempDirectory();
        var web = dir.Write("web.yaml", Service("web"));
        var api = dir.Write("api.yaml", Service("api", 8080));
        await using var run = await RunningSource.StartAsync(dir.Path);
        var initial = run.Sink.Events.Count;

        var failed = await run.ChangeAsync(() => File.WriteAllText(web, Service("web").Replace("port: 80", "port: abc")));
        var error = Assert.Single(failed.Errors);
        Assert.Equal($"{web}:10: Service shop/web: spec.ports[0].port: expected an integer, got \"abc\"", error.Message);

        await run.ChangeAsync(() => File.WriteAllText(api, Service("api", 8081)));

        var change = Assert.Single(run.Sink.Events.Skip(initial));
        Assert.Equal("Update Service api", change.ToString());
        Assert.Equal(8081, ((Service)change.Current!).Spec!.Ports![0].Port);
        Assert.Same(error, run.Source.LastError); // web.yaml is still broken
    }

    [Fact]
    public async Task RunAsync_NewFileDuplicatingAnObject_IsRejectedNamingBothFiles()
    {
        using var dir = new TempDirectory();
        var web = dir.Write("web.yaml", Service("web"));
        await using var run = await RunningSource.StartAsync(dir.Path);
        var initial = run.Sink.Events.Count;

        var copy = "";
        var reload = await run.ChangeAsync(() => copy = dir.Write("web-copy.yaml", Docs(Node("node-z"), Service("web", 81))));

        Assert.Equal(initial, run.Sink.Events.Count);
        var error = Assert.Single(reload.Errors);
        Assert.Equal($"{copy}:12: Service shop/web: duplicate object; first defined at {web}:1", error.Message);
    }

    [Fact]
    public async Task RunAsync_SaveByRename_EmitsUpdate()
    {
        using var dir = new TempDirectory();
        var file = dir.Write("web.yaml", Service("web"));
        await using var run = await RunningSource.StartAsync(dir.Path);
        var initial = run.Sink.Events.Count;

        // Like editors that write a temp file then rename it over the original.
        await run.ChangeAsync(() =>
        {
            var temp = dir.Write(".web.yaml.tmp~", Service("web", 90));
            File.Move(temp, file, overwrite: true);
        });

        var change = Assert.Single(run.Sink.Events.Skip(initial));
        Assert.Equal(90, ((Service)change.Current!).Spec!.Ports![0].Port);
    }

    [Fact]
    public async Task RunAsync_EditorTempFiles_AreIgnored()
    {
        using var dir = new TempDirectory();
        dir.Write("web.yaml", Service("web"));
        await using var run = await RunningSource.StartAsync(dir.Path);
        var initial = run.Sink.Events.Count;

        var reload = await run.ChangeAsync(() =>
        {
            dir.Write(".#web.yaml", "{{{ not yaml");
            dir.Write("web.yaml~", "{{{ not yaml");
            dir.Write(".web.yaml.swp", "{{{ not yaml");
            dir.Write("api.yaml", Service("api"));
        });

        Assert.Empty(reload.Errors);
        Assert.Equal(["Add Service api"], run.Sink.Events.Skip(initial).Select(e => e.ToString()));
    }

    [Fact]
    public async Task RunAsync_SingleFilePath_WatchesThatFile()
    {
        using var dir = new TempDirectory();
        var file = dir.Write("cluster.yaml", Docs(Service("web"), Node("node-a")));
        await using var run = await RunningSource.StartAsync(file);
        var initial = run.Sink.Events.Count;

        await run.ChangeAsync(() => File.WriteAllText(file, Docs(Service("web"), Node("node-a"), Node("node-b"))));

        Assert.Equal(["Add Node node-b"], run.Sink.Events.Skip(initial).Select(e => e.ToString()));
    }

    [Fact]
    public async Task RunAsync_WithoutWatcher_PollingDetectsChanges()
    {
        using var dir = new TempDirectory();
        var file = dir.Write("web.yaml", Service("web"));
        await using var run = await RunningSource.StartAsync(dir.Path, new ManifestSourceOptions
        {
            UseFileSystemWatcher = false,
            Debounce = TimeSpan.FromMilliseconds(20),
            PollInterval = TimeSpan.FromMilliseconds(100),
        });
        var initial = run.Sink.Events.Count;

        await run.ChangeAsync(() => File.WriteAllText(file, Service("web", 81)));

        Assert.Equal(["Update Service web"], run.Sink.Events.Skip(initial).Select(e => e.ToString()));
    }

    [Fact]
    public async Task RunAsync_BurstOfWrites_EndsInTheLastContent()
    {
        using var dir = new TempDirectory();
        var file = dir.Write("web.yaml", Service("web"));
        await using var run = await RunningSource.StartAsync(dir.Path);

        for (var port = 81; port <= 90; port++) File.WriteAllText(file, Service("web", port));

        await run.WaitUntilAsync(
            () => run.Sink.Events.LastOrDefault()?.Current is Service { Spec.Ports: [{ Port: 90 }] }, "the last write");
        Assert.All(run.Sink.Events.Skip(1), e => Assert.Equal(ChangeType.Update, e.Type));
        Assert.InRange(run.Reloads.Count, 1, 3); // debounced: not one reload per write
    }

    [Fact]
    public async Task RunAsync_FileEmptiedThenWritten_KeepsItsObjects_AndEmptiedForGood_DeletesThemAPollLater()
    {
        // What a burst of File.WriteAllText under load met (CI runs, 2026-12-07): a reload between the truncation
        // and the write read an empty file, and the service was deleted and added back.
        using var dir = new TempDirectory();
        var file = dir.Write("web.yaml", Service("web"));
        var poll = TimeSpan.FromSeconds(2);
        await using var run = await RunningSource.StartAsync(dir.Path, new ManifestSourceOptions { Debounce = TimeSpan.FromMilliseconds(50), PollInterval = poll });

        File.WriteAllText(file, ""); // the writer has truncated and not written yet
        await run.WaitUntilAsync(() => run.Logger.Entries.Any(e => e.Message.Contains("is empty; its objects stay", StringComparison.Ordinal)), "the reload that found the file empty");
        Assert.Single(run.Sink.Events); // the initial add only: no delete
        File.WriteAllText(file, Service("web", 81));
        await run.WaitUntilAsync(() => run.Sink.Events.Count == 2, "the update");
        Assert.Equal(ChangeType.Update, run.Sink.Events[1].Type);

        // Positive control: a file left empty does lose its objects, a poll later.
        var emptied = Stopwatch.GetTimestamp();
        File.WriteAllText(file, "");
        await run.WaitUntilAsync(() => run.Sink.Events.Count == 3, "the delete");
        Assert.Equal(ChangeType.Delete, run.Sink.Events[2].Type);
        Assert.True(Stopwatch.GetElapsedTime(emptied) >= poll, $"deleted {Stopwatch.GetElapsedTime(emptied).TotalSeconds:F1} s after the file was emptied");
        Assert.Equal(3, run.Sink.Events.Count);
    }

    [Fact]
    public async Task RunAsync_MissingPath_ThrowsNamingThePath()
    {
        var path = Path.Combine(Path.GetTempPath(), "no-such-manifests-" + Guid.NewGuid().ToString("N"));
        var source = new ManifestSource(path);

        var e = await Assert.ThrowsAsync<ManifestException>(() => source.RunAsync(new RecordingSink(), CancellationToken.None));

        Assert.Equal($"{path}: manifest path does not exist", e.Message);
    }

    [Fact]
    public async Task RunAsync_MalformedFileAtStart_ThrowsWithFileAndLine()
    {
        using var dir = new TempDirectory();
        dir.Write("a.yaml", Service("web"));
        var bad = dir.Write("b.yaml", Docs(Node("node-a"), Slice("web-1", "web", "10.0.0.1").Replace("    kubernetes.io/service-name: web\n", "")));
        var sink = new RecordingSink();

        var e = await Assert.ThrowsAsync<ManifestException>(() => new ManifestSource(dir.Path).RunAsync(sink, CancellationToken.None));

        Assert.Equal((bad, 17), (e.File, e.Line));
        Assert.StartsWith($"{bad}:17: EndpointSlice shop/web-1: label kubernetes.io/service-name is required", e.Message);
        Assert.Empty(sink.Events);
        Assert.Equal(0, sink.InitialStateDeliveredCount);
    }

    [Fact]
    public async Task RunAsync_Cancelled_CompletesQuietly()
    {
        using var dir = new TempDirectory();
        dir.Write("web.yaml", Service("web"));
        using var cts = new CancellationTokenSource();
        var sink = new RecordingSink();
        var run = Task.Run(() => new ManifestSource(dir.Path).RunAsync(sink, cts.Token));
        var deadline = DateTime.UtcNow + RunningSource.Timeout;
        while (sink.InitialStateDeliveredCount == 0 && DateTime.UtcNow < deadline) await Task.Delay(10);

        await cts.CancelAsync();

        await run.WaitAsync(RunningSource.Timeout);
        Assert.True(run.IsCompletedSuccessfully);
    }

    private static List<string> Addresses(IKubernetesObject? slice) =>
        ((EndpointSlice)slice!).Endpoints!.SelectMany(e => e.Addresses!).ToList();
}
