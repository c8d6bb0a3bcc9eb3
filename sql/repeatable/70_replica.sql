-- A logical subscriber (walq replica setup) gets walq.generations from the
-- primary with walq.jobs and walq.commands.  Its own partitions follow the
-- primary's: made when a generation is made there, which is before any job
-- of it can be inserted, and dropped when it is retired there.  The trigger
-- fires only where rows are applied by a subscription (ENABLE REPLICA); on
-- a primary it does nothing.  Applied by `walq init` on every run, after
-- the numbered migrations.

CREATE OR REPLACE FUNCTION walq.generation_replicated()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM walq.make_partitions(NEW.generation);
    ELSIF NEW.retired_at IS NOT NULL AND OLD.retired_at IS NULL THEN
        PERFORM walq.drop_partitions(NEW.generation);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER generations_replicated AFTER INSERT OR UPDATE ON walq.generations
    FOR EACH ROW EXECUTE FUNCTION walq.generation_replicated();
ALTER TABLE walq.generations ENABLE REPLICA TRIGGER generations_replicated;
