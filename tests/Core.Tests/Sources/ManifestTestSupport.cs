using System.Collections.Concurrent;
using System.Diagnostics;
using ProxyPlanes.Model;
using ProxyPlanes.Sources.Manifests;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Core.Tests.Sources;

internal static class TestData
{
    /// <summary>The repository's testdata/manifests folder (found by walking up from the test binaries).</summary>
    public static string ManifestsDirectory { get; } = Path.Combine(RepoPaths.TestData, "manifests");

    public static string Manifest(string name) => Path.Combine(ManifestsDirectory, name);
}

/// <summary>A temporary folder, deleted on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "proxyplanes-manifests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string Write(string name, string content)
    {
        var file = File(name);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(file)!);
        System.IO.File.WriteAllText(file, content);
        return file;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal enum ChangeType { Add, Update, Delete }

internal sealed record SinkEvent(string Kind, IKubernetesObject? Previous, IKubernetesObject? Current)
{
    public ChangeType Type => Previous is null ? ChangeType.Add : Current is null ? ChangeType.Delete : ChangeType.Update;

    public string Name => (Current ?? Previous)!.Metadata!.Name!;

    public override string ToString() => $"{Type} {Kind} {Name}";
}

/// <summary>Records sink calls, and fails if two ever overlap.</summary>
internal sealed class RecordingSink : IObjectSink
{
    private readonly ConcurrentQueue<SinkEvent> _events = new();
    private int _inside;
    private int _overlaps;
    private int _initial;

    public IReadOnlyList<SinkEvent> Events => [.. _events];
    public int InitialStateDeliveredCount => Volatile.Read(ref _initial);
    public int Overlaps => Volatile.Read(ref _overlaps);

    /// <summary>Events before <see cref="IObjectSink.OnInitialStateDelivered"/>, in order.</summary>
    public int EventsBeforeInitial { get; private set; } = -1;

    public void OnService(Service? previous, Service? current) => Record("Service", previous, current);
    public void OnEndpointSlice(EndpointSlice? previous, EndpointSlice? current) => Record("EndpointSlice", previous, current);
    public void OnNode(Node? previous, Node? current) => Record("Node", previous, current);

    public void OnInitialStateDelivered()
    {
        Enter();
        EventsBeforeInitial = _events.Count;
        Interlocked.Increment(ref _initial);
        Exit();
    }

    private void Record(string kind, IKubernetesObject? previous, IKubernetesObject? current)
    {
        Enter();
        Thread.Sleep(1); // widen the window for overlapping calls
        _events.Enqueue(new SinkEvent(kind, previous, current));
        Exit();
    }

    private void Enter()
    {
        if (Interlocked.Increment(ref _inside) != 1) Interlocked.Increment(ref _overlaps);
    }

    private void Exit() => Interlocked.Decrement(ref _inside);
}

/// <summary>A <see cref="ManifestSource"/> running in the background, with fast timings and bounded waits.</summary>
internal sealed class RunningSource : IAsyncDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    private readonly CancellationTokenSource _cts = new();
    private readonly ConcurrentQueue<ManifestException> _failures = new();
    private readonly ConcurrentQueue<ManifestReloadResult> _reloads = new();

    private RunningSource(string path, ManifestSourceOptions? options)
    {
        Source = new ManifestSource(path, Logger, options ?? new ManifestSourceOptions
        {
            Debounce = TimeSpan.FromMilliseconds(50),
            PollInterval = TimeSpan.FromMilliseconds(200),
        });
        Source.ReloadFailed += _failures.Enqueue;
        Source.Reloaded += _reloads.Enqueue;
    }

    public ManifestSource Source { get; }
    public ListLogger Logger { get; } = new();
    public RecordingSink Sink { get; } = new();
    public Task Run { get; private set; } = Task.CompletedTask;
    public IReadOnlyList<ManifestException> Failures => [.. _failures];
    public IReadOnlyList<ManifestReloadResult> Reloads => [.. _reloads];

    /// <summary>Starts the source and waits for its initial state.</summary>
    public static async Task<RunningSource> StartAsync(string path, ManifestSourceOptions? options = null)
    {
        var running = new RunningSource(path, options);
        running.Run = Task.Run(() => running.Source.RunAsync(running.Sink, running._cts.Token));
        await running.WaitUntilAsync(() => running.Sink.InitialStateDeliveredCount > 0 || running.Run.IsCompleted, "initial state");
        if (running.Run.IsFaulted) await running.Run; // surface the error
        return running;
    }

    /// <summary>Runs <paramref name="change"/> and waits for the reload it causes.</summary>
    public async Task<ManifestReloadResult> ChangeAsync(Action change)
    {
        var before = _reloads.Count;
        change();
        await WaitUntilAsync(() => _reloads.Count > before, "reload");
        return Reloads[before];
    }

    public async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            if (Run.IsFaulted) await Run;
            if (watch.Elapsed > Timeout) throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(10);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _cts.CancelAsync();
        await Run.WaitAsync(Timeout);
        _cts.Dispose();
        Assert.Equal(0, Sink.Overlaps);
    }
}

/// <summary>Small manifests for the tests.</summary>
internal static class Manifests
{
    public static string Service(string name, int port = 80, string ns = "shop") => $"""
        apiVersion: v1
        kind: Service
        metadata:
          name: {name}
          namespace: {ns}
        spec:
          clusterIP: 10.96.0.{port % 250}
          ports:
          - name: http
            port: {port}
            protocol: TCP
            targetPort: http

        """;

    public static string Slice(string name, string service, params string[] addresses) => $"""
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: {name}
          namespace: shop
          labels:
            kubernetes.io/service-name: {service}
        addressType: IPv4
        endpoints:
        {string.Concat(addresses.Select(a => $"- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n"))}ports:
        - name: http
          port: 8080
          protocol: TCP

        """;

    public static string Node(string name) => $"""
        apiVersion: v1
        kind: Node
        metadata:
          name: {name}
        spec:
          podCIDR: 10.244.1.0/24
        status:
          addresses:
          - type: InternalIP
            address: 10.0.0.1

        """;

    public static string Docs(params string[] documents) => string.Join("---\n", documents);
}
