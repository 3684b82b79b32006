package chronik.tools;

import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.apache.kafka.common.utils.internals.Exit;

/**
 * Runs several of Kafka's command-line tools, one after the other, in one JVM (a JVM start with
 * the tools' classpath costs seconds; the tests run a dozen commands).
 *
 * <pre>java -cp ... chronik.tools.ToolRunner COMMANDS_FILE</pre>
 *
 * COMMANDS_FILE holds one command a line, its fields separated by tabs: an optional
 * {@code stdin=FILE} (what the tool reads as its standard input, else nothing), the tool's main
 * class (what bin/kafka-*.sh runs), then its arguments.  For command N the runner prints
 * "### N begin", the tool's standard output, then "### N exit CODE" (the status the tool passed
 * to Kafka's Exit.exit first, or 0 when its main returned); the tools' log lines and stderr go
 * to the JVM's stderr, each command's after a "### N begin" line.  Kafka's tools end through
 * {@code Exit.exit}, which is turned here into an exception that ends only that command.  Some
 * tools catch every Throwable around their own Exit.exit(0) and then exit(1): the first status
 * is the one the real exit would have had.
 */
public final class ToolRunner {
    private ToolRunner() {
    }

    /** Thrown instead of exiting the JVM when a tool calls Exit.exit. */
    static final class ExitCalled extends RuntimeException {
        final int status;

        ExitCalled(int status) {
            super("exit " + status, null, false, false);
            this.status = status;
        }
    }

    private static Integer firstExit;

    public static void main(String[] args) throws Exception {
        PrintStream out = System.out;
        PrintStream err = System.err;
        InputStream in = System.in;
        Exit.setExitProcedure((status, message) -> {
            if (firstExit == null) {
                firstExit = status;
            }
            throw new ExitCalled(status);
        });
        Exit.setShutdownHookAdder((name, runnable) -> { });
        List<String> lines = Files.readAllLines(Path.of(args[0]), StandardCharsets.UTF_8);
        int n = 0;
        for (String line : lines) {
            if (line.isBlank()) {
                continue;
            }
            List<String> fields = new ArrayList<>(Arrays.asList(line.split("\t")));
            byte[] input = new byte[0];
            if (fields.get(0).startsWith("stdin=")) {
                input = Files.readAllBytes(Path.of(fields.remove(0).substring("stdin=".length())));
            }
            String mainClass = fields.remove(0);
            out.println("### " + n + " begin");
            err.println("### " + n + " begin " + mainClass);
            out.flush();
            System.setIn(new ByteArrayInputStream(input));
            int status = 0;
            firstExit = null;
            try {
                Class.forName(mainClass).getMethod("main", String[].class).invoke(null, (Object) fields.toArray(new String[0]));
            } catch (InvocationTargetException e) {
                Throwable cause = e.getCause();
                while (cause != null && !(cause instanceof ExitCalled)) {
                    cause = cause.getCause();
                }
                if (cause == null) {
                    e.getCause().printStackTrace(err);
                    status = 99;
                } else {
                    status = firstExit;
                }
            } finally {
                System.out.flush();
                System.setOut(out);
                System.setIn(in);
            }
            out.println("### " + n + " exit " + status);
            out.flush();
            n++;
        }
        System.exit(0);
    }
}
