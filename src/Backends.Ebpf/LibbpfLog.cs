using System.Runtime.InteropServices;
using System.Text;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// Captures what libbpf prints (its warnings and the verifier's log of a rejected program) on the
/// thread that opens and loads an object, so a failed load can show the user why. libbpf calls the
/// print function synchronously on the calling thread; one process-wide function, set once.
/// </summary>
internal static unsafe class LibbpfLog
{
    /// <summary>Logs longer than this keep their tail: the verifier's reason is at the end.</summary>
    internal const int MaxCapturedChars = 64 * 1024;

    private const int LevelDebug = 2;

    [ThreadStatic]
    private static StringBuilder? _capture;

    private static readonly Lazy<bool> Installed = new(() =>
    {
        Interop.SetPrint(&Print);
        return true;
    });

    /// <summary>Starts capturing on this thread; the scope's <see cref="Scope.Text"/> is what was printed.</summary>
    internal static Scope Capture()
    {
        _ = Installed.Value;
        return new Scope(_capture = new StringBuilder());
    }

    internal readonly struct Scope(StringBuilder text) : IDisposable
    {
        public string Text
        {
            get
            {
                var all = text.ToString();
                return all.Length <= MaxCapturedChars ? all : $"[... {all.Length - MaxCapturedChars} characters left out ...]\n{all[^MaxCapturedChars..]}";
            }
        }

        public void Dispose() => _capture = null;
    }

    [UnmanagedCallersOnly]
    private static int Print(int level, byte* format, nint arguments)
    {
        if (_capture is not { } capture || level >= LevelDebug) return 0;
        var text = Format(format, arguments);
        capture.Append(text);
        return text.Length;
    }

    /// <summary>
    /// vsnprintf into a buffer of the right size. A va_list is consumed by use, so the measuring call
    /// gets a copy (va_copy is a plain copy of the struct: 24 bytes on x86-64, 32 on arm64; both ABIs
    /// pass the va_list as a pointer to it). Elsewhere one call into a fixed buffer.
    /// </summary>
    private static string Format(byte* format, nint arguments)
    {
        var vaListSize = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 24,
            Architecture.Arm64 => 32,
            _ => 0,
        };
        var length = 16 * 1024;
        if (vaListSize > 0)
        {
            var copy = stackalloc byte[vaListSize];
            Buffer.MemoryCopy((void*)arguments, copy, vaListSize, vaListSize);
            length = Interop.VsnPrintf(null, 0, format, (nint)copy) + 1;
            if (length <= 0) return string.Empty;
        }
        var buffer = (byte*)NativeMemory.Alloc((nuint)length);
        try
        {
            var written = Interop.VsnPrintf(buffer, (nuint)length, format, arguments);
            return written < 0 ? string.Empty : Encoding.UTF8.GetString(buffer, Math.Min(written, length - 1));
        }
        finally
        {
            NativeMemory.Free(buffer);
        }
    }
}
