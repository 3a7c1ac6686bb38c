using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Model;

namespace ProxyPlanes.Sources.Manifests;

public sealed class ManifestSourceOptions
{
    /// <summary>Quiet time after a change before reloading, so a burst of writes is one reload.</summary>
    public TimeSpan Debounce { get; init; } = TimeSpan.FromMilliseconds(75);

    /// <summary>Longest a reload is postponed by a continuous stream of changes.</summary>
    public TimeSpan MaxDebounce { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How often file sizes and modification times are compared (fallback for missed watcher events).</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Use a <see cref="FileSystemWatcher"/> in addition to polling.</summary>
    public bool UseFileSystemWatcher { get; init; } = true;
}

/// <summary>What one reload did.</summary>
public sealed record ManifestReloadResult(
    IReadOnlyList<string> ChangedFiles, int Added, int Updated, int Deleted, IReadOnlyList<ManifestException> Errors);

/// <summary>
/// Serves Services, EndpointSlices and Nodes from a manifest file or folder (see <see cref="ManifestParser"/>).
/// <see cref="RunAsync"/> reads everything (any error, or a missing path, throws a <see cref="ManifestException"/>),
/// delivers it as adds, calls <see cref="IObjectSink.OnInitialStateDelivered"/>, then watches the path and
/// delivers only the differences: adds, deletes, and updates of objects whose content changed.
/// A file that becomes invalid is reported (log, <see cref="ReloadFailed"/>, <see cref="LastError"/>) and its
/// last good objects stay in force until it is fixed; a file that disappears takes its objects with it, and one
/// that becomes empty does too once it is still empty a poll later (a writer truncates before it writes).
/// Sink calls are made one at a time.
/// </summary>
public sealed class ManifestSource : IObjectSource
{
    private readonly ILogger _logger;
    private readonly ManifestSourceOptions _options;
    private readonly Dictionary<string, FileState> _files = new(StringComparer.Ordinal);
    private readonly Dictionary<ManifestObjectKey, string> _owners = [];
    private readonly Dictionary<ManifestObjectKey, Delivered> _delivered = [];
    private volatile ManifestException? _lastError;
    private volatile IReadOnlyList<ManifestException> _currentErrors = [];
    private volatile bool _watcherBroken;
    private int _running;

    public ManifestSource(string path, ILogger? logger = null, ManifestSourceOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Path = path;
        _logger = logger ?? NullLogger.Instance;
        _options = options ?? new ManifestSourceOptions();
    }

    /// <summary>The manifest file or folder.</summary>
    public string Path { get; }

    /// <summary>The most recent reload error; null once no file is failing.</summary>
    public ManifestException? LastError => _lastError;

    /// <summary>The errors of the files currently kept at their last good state.</summary>
    public IReadOnlyList<ManifestException> CurrentErrors => _currentErrors;

    /// <summary>Raised (on the source's loop) for each file that fails to reload; its last good objects stay.</summary>
    public event Action<ManifestException>? ReloadFailed;

    /// <summary>Raised (on the source's loop) after each reload that saw changed files, after the sink calls.</summary>
    public event Action<ManifestReloadResult>? Reloaded;

    public async Task RunAsync(IObjectSink sink, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sink);
        if (Interlocked.Exchange(ref _running, 1) == 1) throw new InvalidOperationException("the manifest source is already running");
        using var signal = new SemaphoreSlim(0);
        FileSystemWatcher? watcher = null;
        try
        {
            LoadInitial(sink);
            watcher = CreateWatcher(signal);
            while (true)
            {
                var signaled = await signal.WaitAsync(_options.PollInterval, cancellationToken).ConfigureAwait(false);
                if (!signaled)
                {
                    if (_options.UseFileSystemWatcher && (watcher is null || _watcherBroken))
                    {
                        watcher?.Dispose();
                        watcher = CreateWatcher(signal);
                    }

                    if (!StampsChanged()) continue;
                }

                var started = Stopwatch.GetTimestamp();
                while (Stopwatch.GetElapsedTime(started) < _options.MaxDebounce
                       && await signal.WaitAsync(_options.Debounce, cancellationToken).ConfigureAwait(false))
                {
                }

                while (signal.Wait(0))
                {
                }

                Reload(sink);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            watcher?.Dispose();
            Volatile.Write(ref _running, 0);
        }
    }

    private void LoadInitial(IObjectSink sink)
    {
        _files.Clear();
        _owners.Clear();
        _delivered.Clear();
        var files = ManifestParser.FindManifestFiles(Path);
        var sets = new List<ManifestDocumentSet>(files.Count);
        foreach (var file in files)
        {
            var stamp = Stamp(file);
            byte[] bytes;
            try
            {
                bytes = File.ReadAllBytes(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ManifestException(file, 0, null, $"cannot read: {e.Message}", innerException: e);
            }

            var set = ManifestParser.Parse(ManifestParser.DecodeText(bytes), file);
            sets.Add(set);
            _files[file] = new FileState { Stamp = stamp, Hash = SHA256.HashData(bytes), Good = set };
            LogIgnored(set);
        }

        var all = ManifestDocumentSet.Combine(sets);
        foreach (var o in all.Objects) _owners[o.Key] = o.File;

        foreach (var o in OfKind(all.Objects, "Node")) Emit(sink, o.Key, null, Deliver(o));
        foreach (var o in OfKind(all.Objects, "Service")) Emit(sink, o.Key, null, Deliver(o));
        foreach (var o in OfKind(all.Objects, "EndpointSlice")) Emit(sink, o.Key, null, Deliver(o));
        _logger.LogInformation(
            "Read {Count} objects ({Services} services, {Slices} endpoint slices, {Nodes} nodes) from {Files} manifest file(s) at {Path}",
            all.Count, all.Services.Count, all.EndpointSlices.Count, all.Nodes.Count, files.Count, Path);
        sink.OnInitialStateDelivered();
    }

    private void Reload(IObjectSink sink)
    {
        IReadOnlyList<string> files;
        try
        {
            files = ManifestParser.FindManifestFiles(Path);
        }
        catch (ManifestException e)
        {
            _logger.LogWarning("Manifest path is gone, removing its objects: {Error}", e.Message);
            files = [];
        }

        // Which files changed (by content), appeared or disappeared.
        var present = new HashSet<string>(files, StringComparer.Ordinal);
        var changed = new List<(string File, FileStamp Stamp, byte[]? Bytes, byte[]? Hash)>();
        foreach (var file in files)
        {
            var stamp = Stamp(file);
            byte[] bytes;
            try
            {
                bytes = File.ReadAllBytes(file);
            }
            catch (FileNotFoundException)
            {
                present.Remove(file);
                continue;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                _logger.LogDebug("Cannot read {File} yet: {Message}", file, e.Message);
                if (!_files.ContainsKey(file)) continue;
                _files[file].Stamp = default; // retry at the next poll
                continue;
            }

            if (_files.TryGetValue(file, out var had))
            {
                if (bytes.Length > 0)
                {
                    had.EmptySince = null;
                }
                else if (had.Good.Count > 0)
                {
                    // A writer that truncates and then writes (`File.WriteAllText`, `cat > file`) leaves the file
                    // empty for a moment; read then, its services would be deleted and added back. An emptied file
                    // keeps its objects until it is still empty a poll later.
                    had.EmptySince ??= Stopwatch.GetTimestamp();
                    if (Stopwatch.GetElapsedTime(had.EmptySince.Value) < _options.PollInterval)
                    {
                        _logger.LogDebug("{File} is empty; its objects stay unless it is still empty at the next poll", file);
                        had.Stamp = default; // look again at the next poll
                        continue;
                    }
                }
            }

            var hash = SHA256.HashData(bytes);
            if (_files.TryGetValue(file, out var known) && known.Hash is not null && hash.AsSpan().SequenceEqual(known.Hash))
            {
                known.Stamp = stamp;
                continue;
            }

            changed.Add((file, stamp, bytes, hash));
        }

        foreach (var file in _files.Keys)
            if (!present.Contains(file)) changed.Add((file, default, null, null));
        if (changed.Count == 0) return;
        changed.Sort((a, b) => StringComparer.Ordinal.Compare(a.File, b.File));

        var before = new Dictionary<ManifestObjectKey, ManifestObject>();
        foreach (var c in changed)
            if (_files.TryGetValue(c.File, out var s))
                foreach (var o in s.Good.Objects) before[o.Key] = o;

        var errors = new List<ManifestException>();
        var pending = new List<(string File, FileStamp Stamp, byte[] Hash, ManifestDocumentSet Set)>();
        foreach (var c in changed)
        {
            if (c.Bytes is null)
            {
                SetGood(c.File, ManifestDocumentSet.Empty);
                _files.Remove(c.File);
                continue;
            }

            try
            {
                var set = ManifestParser.Parse(ManifestParser.DecodeText(c.Bytes), c.File);
                LogIgnored(set);
                pending.Add((c.File, c.Stamp, c.Hash!, set));
            }
            catch (ManifestException e)
            {
                Fail(c.File, c.Stamp, c.Hash!, e, errors);
            }
        }

        // Apply the valid files; one whose object is also defined in another file is an error, unless that
        // other file is itself changing in this reload (retried until nothing more applies).
        bool progress;
        do
        {
            progress = false;
            for (var i = 0; i < pending.Count; i++)
            {
                var p = pending[i];
                if (Conflict(p.File, p.Set) is not null) continue;
                var state = GetState(p.File);
                var wasFailing = state.Error is not null;
                state.Stamp = p.Stamp;
                state.Hash = p.Hash;
                state.Error = null;
                SetGood(p.File, p.Set);
                if (wasFailing) _logger.LogInformation("{File} is valid again; its objects are applied", p.File);
                pending.RemoveAt(i--);
                progress = true;
            }
        }
        while (progress && pending.Count > 0);

        foreach (var p in pending)
        {
            var (mine, other) = Conflict(p.File, p.Set)!.Value;
            Fail(p.File, p.Stamp, p.Hash, ManifestDocumentSet.Duplicate(mine, other), errors);
        }

        // The difference, over the objects of the changed files (keys are unique across files).
        var after = new List<ManifestObject>();
        foreach (var c in changed)
            if (_files.TryGetValue(c.File, out var s))
                after.AddRange(s.Good.Objects);
        var afterKeys = after.Select(o => o.Key).ToHashSet();
        var gone = before.Values.Where(o => !afterKeys.Contains(o.Key)).ToList();

        int added = 0, updated = 0, deleted = 0;
        foreach (var kind in (string[])["Node", "Service"]) AddOrUpdate(kind);
        Delete("EndpointSlice");
        AddOrUpdate("EndpointSlice");
        Delete("Service");
        Delete("Node");

        _currentErrors = _files.Values.Where(f => f.Error is not null).Select(f => f.Error!).ToList();
        if (_currentErrors.Count == 0) _lastError = null;

        var changedFiles = changed.Select(c => c.File).ToList();
        if (added + updated + deleted > 0)
        {
            _logger.LogInformation("Manifests reloaded ({Files}): {Added} added, {Updated} updated, {Deleted} deleted",
                string.Join(", ", changedFiles), added, updated, deleted);
        }

        Raise(Reloaded, new ManifestReloadResult(changedFiles, added, updated, deleted, errors));
        return;

        void AddOrUpdate(string kind)
        {
            foreach (var o in OfKind(after, kind))
            {
                if (_delivered.TryGetValue(o.Key, out var old))
                {
                    var json = Serialize(o.Object);
                    if (json.AsSpan().SequenceEqual(old.Json)) continue;
                    _delivered[o.Key] = new Delivered(o.Object, json);
                    Emit(sink, o.Key, old.Object, o.Object);
                    updated++;
                }
                else
                {
                    Emit(sink, o.Key, null, Deliver(o));
                    added++;
                }
            }
        }

        void Delete(string kind)
        {
            foreach (var o in OfKind(gone, kind))
            {
                if (!_delivered.Remove(o.Key, out var old)) continue;
                Emit(sink, o.Key, old.Object, null);
                deleted++;
            }
        }
    }

    private void Fail(string file, FileStamp stamp, byte[] hash, ManifestException error, List<ManifestException> errors)
    {
        var state = GetState(file);
        state.Stamp = stamp;
        state.Hash = hash; // not re-reported until the content changes again
        state.Error = error;
        errors.Add(error);
        _lastError = error;
        _logger.LogError("Invalid manifest, keeping the file's last good objects: {Error}", error.Message);
        Raise(ReloadFailed, error);
    }

    private FileState GetState(string file)
    {
        if (!_files.TryGetValue(file, out var state)) _files[file] = state = new FileState { Good = ManifestDocumentSet.Empty };
        return state;
    }

    private void SetGood(string file, ManifestDocumentSet set)
    {
        if (_files.TryGetValue(file, out var state))
            foreach (var o in state.Good.Objects)
                if (_owners.TryGetValue(o.Key, out var owner) && owner == file) _owners.Remove(o.Key);
        foreach (var o in set.Objects) _owners[o.Key] = file;
        GetState(file).Good = set;
    }

    private (ManifestObject Mine, ManifestObject Other)? Conflict(string file, ManifestDocumentSet set)
    {
        foreach (var o in set.Objects)
        {
            if (_owners.TryGetValue(o.Key, out var owner) && owner != file
                && _files.TryGetValue(owner, out var other) && other.Good.TryGet(o.Key, out var theirs))
                return (o, theirs);
        }

        return null;
    }

    private bool StampsChanged()
    {
        IReadOnlyList<string> files;
        try
        {
            files = ManifestParser.FindManifestFiles(Path);
        }
        catch (ManifestException)
        {
            files = [];
        }

        if (files.Count != _files.Count) return true;
        foreach (var file in files)
            if (!_files.TryGetValue(file, out var state) || state.Stamp != Stamp(file)) return true;
        return false;
    }

    private FileSystemWatcher? CreateWatcher(SemaphoreSlim signal)
    {
        if (!_options.UseFileSystemWatcher) return null;
        _watcherBroken = false;
        FileSystemWatcher? watcher = null;
        try
        {
            var isDirectory = Directory.Exists(Path);
            var full = System.IO.Path.GetFullPath(Path);
            var dir = isDirectory ? full : System.IO.Path.GetDirectoryName(full);
            if (dir is null || !Directory.Exists(dir)) return null;
            watcher = new FileSystemWatcher(dir, isDirectory ? "*" : System.IO.Path.GetFileName(full))
            {
                IncludeSubdirectories = isDirectory,
                NotifyFilter = NotifyFilters.FileName | NotifyFilters.DirectoryName | NotifyFilters.LastWrite
                    | NotifyFilters.Size | NotifyFilters.CreationTime,
            };
            watcher.Changed += (_, e) => OnChange(e.Name);
            watcher.Created += (_, e) => OnChange(e.Name);
            watcher.Deleted += (_, e) => OnChange(e.Name);
            watcher.Renamed += (_, e) =>
            {
                OnChange(e.Name);
                OnChange(e.OldName);
            };
            watcher.Error += (_, e) =>
            {
                _logger.LogDebug("File watcher error ({Message}); polling until it is recreated", e.GetException().Message);
                _watcherBroken = true;
                Signal();
            };
            watcher.EnableRaisingEvents = true;
            return watcher;
        }
        catch (Exception e) when (e is IOException or ArgumentException or PlatformNotSupportedException or UnauthorizedAccessException)
        {
            watcher?.Dispose();
            _logger.LogWarning("Cannot watch {Path} ({Message}); polling every {Interval}", Path, e.Message, _options.PollInterval);
            return null;
        }

        void OnChange(string? name)
        {
            if (!IsNoise(name)) Signal();
        }

        void Signal()
        {
            if (signal.CurrentCount == 0)
            {
                try
                {
                    signal.Release();
                }
                catch (ObjectDisposedException)
                {
                }
            }
        }
    }

    // Editor swap/backup/lock files: no reason to re-read.
    private static bool IsNoise(string? relativeName)
    {
        if (relativeName is null) return false;
        var name = System.IO.Path.GetFileName(relativeName);
        return name.StartsWith(".#", StringComparison.Ordinal) || name.EndsWith('~') || name == "4913"
            || name.EndsWith(".swp", StringComparison.Ordinal) || name.EndsWith(".swx", StringComparison.Ordinal)
            || name.EndsWith(".swo", StringComparison.Ordinal);
    }

    private static FileStamp Stamp(string file)
    {
        try
        {
            var info = new FileInfo(file);
            return info.Exists ? new FileStamp(info.Length, info.LastWriteTimeUtc.Ticks) : default;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return default;
        }
    }

    private IKubernetesObject Deliver(ManifestObject o)
    {
        _delivered[o.Key] = new Delivered(o.Object, Serialize(o.Object));
        return o.Object;
    }

    private static byte[] Serialize(IKubernetesObject obj) => obj switch
    {
        Service s => JsonSerializer.SerializeToUtf8Bytes(s, KubernetesJsonContext.Default.Service),
        EndpointSlice e => JsonSerializer.SerializeToUtf8Bytes(e, KubernetesJsonContext.Default.EndpointSlice),
        Node n => JsonSerializer.SerializeToUtf8Bytes(n, KubernetesJsonContext.Default.Node),
        _ => throw new ArgumentException($"unsupported object type {obj.GetType().Name}", nameof(obj)),
    };

    private static IEnumerable<ManifestObject> OfKind(IEnumerable<ManifestObject> objects, string kind) =>
        objects.Where(o => o.Key.Kind == kind);

    private static void Emit(IObjectSink sink, ManifestObjectKey key, IKubernetesObject? previous, IKubernetesObject? current)
    {
        switch (key.Kind)
        {
            case "Service": sink.OnService((Service?)previous, (Service?)current); break;
            case "EndpointSlice": sink.OnEndpointSlice((EndpointSlice?)previous, (EndpointSlice?)current); break;
            case "Node": sink.OnNode((Node?)previous, (Node?)current); break;
        }
    }

    private void LogIgnored(ManifestDocumentSet set)
    {
        if (!_logger.IsEnabled(LogLevel.Debug)) return;
        foreach (var i in set.Ignored) _logger.LogDebug("Ignoring {Manifest} (not a kind the proxy reads)", i.ToString());
    }

    private void Raise<T>(Action<T>? handler, T value)
    {
        try
        {
            handler?.Invoke(value);
        }
        catch (Exception e)
        {
            _logger.LogWarning(e, "A manifest source event handler failed");
        }
    }

    private readonly record struct FileStamp(long Length, long LastWriteTicks);

    private sealed record Delivered(IKubernetesObject Object, byte[] Json);

    private sealed class FileState
    {
        public FileStamp Stamp { get; set; }
        public byte[]? Hash { get; set; }
        public required ManifestDocumentSet Good { get; set; }
        public ManifestException? Error { get; set; }

        /// <summary>When a reload first found the file empty while it still had objects (a write in progress?).</summary>
        public long? EmptySince { get; set; }
    }
}
