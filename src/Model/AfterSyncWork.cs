namespace ProxyPlanes.Model;

/// <summary>
/// Work a backend wants done once its sync is over and reported, not inside the sync's time: the compacting
/// collection after a large full sync (DataPlane's <c>FullSyncCollection</c>). The controller opens a scope around
/// <see cref="IProxyBackend.SyncAsync"/> (<see cref="Open"/>); inside it <see cref="TryDefer"/> records the work
/// and the scope's <see cref="Scope.Dispose"/> runs it, after the sync's log line and report. Without a scope (a
/// test or tool calling a backend directly) <see cref="TryDefer"/> returns false and the caller runs the work at
/// once. The scope flows with the async call (an <see cref="AsyncLocal{T}"/>): parallel syncs keep their own.
/// </summary>
public static class AfterSyncWork
{
    private static readonly AsyncLocal<Scope?> Current = new();

    /// <summary>Opens a scope on this async flow; dispose it where the work should run.</summary>
    public static Scope Open()
    {
        var scope = new Scope(Current.Value);
        Current.Value = scope;
        return scope;
    }

    /// <summary>
    /// Records <paramref name="work"/> under <paramref name="key"/> in the open scope (a later request with the same key
    /// replaces an earlier one: one collection however many were asked for); false when no scope is open.
    /// </summary>
    public static bool TryDefer(string key, Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        if (Current.Value is not { } scope) return false;
        scope.Add(key, work);
        return true;
    }

    /// <summary>Deferred work, run by <see cref="Dispose"/>.</summary>
    public sealed class Scope : IDisposable
    {
        private readonly Scope? _outer;
        private readonly Lock _lock = new();
        private List<(string Key, Action Work)>? _work;

        internal Scope(Scope? outer) => _outer = outer;

        /// <summary>How many pieces of work are waiting for <see cref="Dispose"/>.</summary>
        public int Pending
        {
            get
            {
                lock (_lock) return _work?.Count ?? 0;
            }
        }

        internal void Add(string key, Action work)
        {
            lock (_lock)
            {
                _work ??= [];
                _work.RemoveAll(w => w.Key == key);
                _work.Add((key, work));
            }
        }

        /// <summary>Closes the scope and runs its work in the order it was recorded.</summary>
        public void Dispose()
        {
            Current.Value = _outer;
            List<(string Key, Action Work)>? work;
            lock (_lock) (work, _work) = (_work, null);
            if (work is null) return;
            foreach (var (_, action) in work) action();
        }
    }
}
